/**
 * How long Redis keeps every other client waiting while a large submission runs: another process sends PING
 * every millisecond on its own connection and records its round trips; meanwhile this one submits `--tasks`
 * tasks as one batch (`enqueueBatch`: one atomic script creates the batch with all its ids, then the tasks
 * are enqueued in pipelines), as plain tasks (`enqueueTasks`), and as BullMQ's `addBulk`. Prints, per
 * submission and repetition, its duration, the longest PING round trip seen during it, and the longest single
 * command Redis logged meanwhile (SLOWLOG, `commandstats.ts`).
 *
 *   node bench/stall.ts [--tasks=10000] [--reps=3]
 *
 * Redis runs one command at a time, so a long script is a stall for the whole fleet: heartbeats, claims and
 * dashboards all wait. A private Redis (`redis-server.ts`); nothing is asserted and nothing is written to docs.
 */
import { spawn } from "node:child_process"
import { Queue } from "bullmq"
import { defineAgent, Done } from "../src/Agent.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { readSlowest, resetStats } from "./commandstats.ts"
import { startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const tasks = Number(arg("tasks") ?? 10_000)
const reps = Number(arg("reps") ?? 3)
if (![tasks, reps].every((n) => Number.isInteger(n) && n >= 1)) throw new Error("--tasks and --reps must be positive integers")

/** The prober: PING (inline protocol) every ms, printing "<epoch ms> <round trip ms>" for each reply. */
const PROBER = `
const s = require("node:net").connect(Number(process.argv[1]), "127.0.0.1")
let t = 0
const send = () => { t = performance.now(); s.write("PING\\r\\n") }
s.on("data", () => { process.stdout.write(Date.now() + " " + (performance.now() - t).toFixed(2) + "\\n"); setTimeout(send, 1) })
s.on("connect", send)
process.stdin.on("end", () => process.exit(0)); process.stdin.resume()
`

const redis = await startRedis()
const prober = spawn(process.execPath, ["-e", PROBER, String(redis.port)], { stdio: ["pipe", "pipe", "inherit"] })
const samples: Array<readonly [number, number]> = []
let partial = ""
prober.stdout.on("data", (chunk: Buffer) => {
  const lines = (partial + chunk.toString()).split("\n")
  partial = lines.pop()!
  for (const line of lines) {
    const [at, ms] = line.split(" ").map(Number)
    samples.push([at!, ms!])
  }
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Runs `submit` and reports its duration and the longest PING round trip that overlapped it. */
const measure = async (label: string, submit: () => Promise<unknown>) => {
  await sleep(300)
  await resetStats(redis.admin)
  const from = Date.now()
  await submit()
  const to = Date.now()
  await sleep(100) // a PING stuck behind the submission's last command answers after it
  const during = samples.filter(([at]) => at >= from && at <= to + 100).map(([, ms]) => ms)
  const slowest = await readSlowest(redis.admin)
  console.log(
    `  ${label.padEnd(20)} ${String(to - from).padStart(6)} ms   longest PING meanwhile ${Math.max(0, ...during).toFixed(1).padStart(5)} ms` +
      `   longest command ${(slowest.us / 1000).toFixed(1)} ms (${slowest.command || "none ≥ 1 ms"})`
  )
}

try {
  const orchestrator = new Orchestrator({ namespace: "stall", redisUrl: redis.url })
  const agent = defineAgent({ name: "noop", turn: () => Promise.resolve(Done(null)) })
  await orchestrator.getTaskData("ready") // connected, library loaded
  const queue = new Queue("stall", { connection: { host: "127.0.0.1", port: redis.port } })
  await queue.waitUntilReady()
  const make = () => Array.from({ length: tasks }, (_, i) => agent.createTask({ ownerId: "o", payload: { i } }))
  console.log(`${tasks} tasks per submission; Redis ${redis.version}`)
  for (let r = 1; r <= reps; r++) {
    console.log(`repetition ${r}`)
    await measure("ours: enqueueBatch", () => orchestrator.enqueueBatch(agent, make()))
    await measure("ours: enqueueTasks", () => orchestrator.enqueueTasks(agent, make()))
    await measure("BullMQ: addBulk", () => queue.addBulk(Array.from({ length: tasks }, (_, i) => ({ name: "j", data: { i } }))))
  }
  await queue.close()
  await orchestrator.stop()
} finally {
  prober.stdin.end()
  await redis.stop()
}
