/**
 * The package as a user gets it: `npm pack` builds and packs it, a fresh temp project installs the
 * tarball, and a small ESM program imports it from node_modules (compiled JS, `.lua` files and the
 * dashboard's assets included), runs a task to completion against Redis and gets the dashboard's files.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, expect, it } from "vitest"
import { freshKeyspace, redisUrl } from "../support/TestRedis.ts"

const root = resolve(import.meta.dirname, "../..")
const work = mkdtempSync(join(tmpdir(), "factorial-pack-"))
afterAll(() => rmSync(work, { recursive: true, force: true }))

it("packs, installs into a fresh project and runs a task", { timeout: 240_000 }, () => {
  const env = { ...process.env, npm_config_loglevel: "error", npm_config_fund: "false", npm_config_audit: "false" }
  execFileSync("npm", ["pack", "--pack-destination", work], { cwd: root, env, stdio: "pipe" })
  const tarball = readdirSync(work).find((f) => f.endsWith(".tgz"))!
  const app = join(work, "app")
  execFileSync("mkdir", ["-p", app])
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }))
  execFileSync("npm", ["install", join(work, tarball)], { cwd: app, env, stdio: "pipe" })
  const { namespace } = freshKeyspace()
  writeFileSync(
    join(app, "main.js"),
    `import { Orchestrator, defineAgent, Done, AgentWorkerConfig, Agent, tool, Audit } from "factorial-ts"
if (typeof Agent !== "function" || typeof tool !== "function" || typeof Audit !== "function") throw new Error("missing exports")
const agent = defineAgent({ name: "hello", turn: (ctx) => Promise.resolve(Done("hello " + ctx.payload.who)) })
const o = new Orchestrator({ redisUrl: ${JSON.stringify(redisUrl)}, namespace: ${JSON.stringify(namespace)} })
o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
await o.start()
const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "me", payload: { who: "pack" } }))
for (let i = 0; i < 200; i++) {
  const d = await o.getTaskData(id)
  if (d?.status === "completed") { console.log(JSON.stringify(d.output)); break }
  await new Promise((r) => setTimeout(r, 25))
}
const http = o.createObservabilityApp()
for (const url of ["/observability", "/observability/assets/dashboard.js", "/observability/assets/dashboard.css"]) {
  console.log(url, (await http.inject({ url })).statusCode)
}
await http.close()
await o.stop()
`
  )
  const out = execFileSync(process.execPath, ["main.js"], { cwd: app, env, encoding: "utf8" })
  expect(out.trim().split("\n")).toEqual([
    JSON.stringify("hello pack"),
    "/observability 200",
    "/observability/assets/dashboard.js 200",
    "/observability/assets/dashboard.css 200"
  ])
})
