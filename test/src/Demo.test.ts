/**
 * The README's run command works: the demo process starts, runs its LLM agent tasks to completion
 * against the built-in demo model (no API key), serves the control API, and stops cleanly on SIGINT.
 */
import { spawn } from "node:child_process"
import { resolve } from "node:path"
import { expect, it } from "vitest"
import { freshKeyspace, onCluster, redisUrl } from "../support/TestRedis.ts"

it.skipIf(onCluster)("runs the demo without an API key and stops on SIGINT", async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: redisUrl, PORT: "0", DEMO_NAMESPACE: freshKeyspace().namespace }
  delete env.OPENAI_API_KEY
  const child = spawn(process.execPath, [resolve(import.meta.dirname, "../../src/cli/main.ts"), "demo"], { env })
  let out = ""
  child.stdout.on("data", (d) => (out += String(d)))
  child.stderr.on("data", (d) => (out += String(d)))
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)))
  const deadline = Date.now() + 20_000
  while ((out.match(/completed/g) ?? []).length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  child.kill("SIGINT")
  const code = await exited
  expect(out).toContain("built-in scripted demo model")
  expect(out).toMatch(/dashboard at http:\/\/127\.0\.0\.1:\d+\/observability/)
  expect((out.match(/completed \(turns/g) ?? []).length).toBe(4)
  expect(out).toMatch(/cancelled/)
  expect(code).toBe(0)
}, 30_000)
