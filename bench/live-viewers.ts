/**
 * What open dashboards cost a busy namespace: a drain of `--tasks` queued tasks by 100 turn slots, with 0 and
 * with `--viewers` live event streams open (`GET /observability/api/events`, what each dashboard tab holds, read by
 * a child process so the viewers' CPU is not the workers'), alternating `--reps` times. Prints jobs/s, our Redis
 * CPU per job and the events each viewer received. Ours alone (BullMQ has no event stream to compare).
 *
 *   node bench/live-viewers.ts [--tasks=20000] [--viewers=8] [--reps=2]
 *
 * Nothing is asserted and nothing is written to docs.
 */
import { spawn } from "node:child_process"
import { defineAgent, Done } from "../src/Agent.ts"
import { AgentWorkerConfig, ObservabilityConfig } from "../src/Config.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { redisCpuSeconds, startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const tasks = Number(arg("tasks") ?? 20_000)
const viewers = Number(arg("viewers") ?? 8)
const reps = Number(arg("reps") ?? 2)
if (![tasks, viewers, reps].every((n) => Number.isInteger(n) && n >= 1)) throw new Error("--tasks, --viewers and --reps must be positive integers")

/** The viewers: `count` SSE streams from `url`, each counting its task events; prints the counts when told to stop. */
const VIEWERS = `
const [url, count] = [process.argv[1], Number(process.argv[2])]
const seen = Array(count).fill(0)
for (let i = 0; i < count; i++) {
  fetch(url).then(async (res) => {
    const decoder = new TextDecoder()
    for await (const chunk of res.body) seen[i] += (decoder.decode(chunk).match(/event: task/g) ?? []).length
  }).catch(() => {})
}
process.on("message", () => { process.send(seen); setTimeout(() => process.exit(0), 50) })
process.send("ready")
`

const redis = await startRedis()

const drain = async (label: string, withViewers: number) => {
  await redis.admin.flushall()
  const namespace = `viewers-${withViewers}-${Date.now() % 100_000}`
  const orchestrator = new Orchestrator({
    namespace,
    redisUrl: redis.url,
    observabilityConfig: new ObservabilityConfig({ port: 0, host: "127.0.0.1" })
  })
  let done = 0
  let finish = () => {}
  const all = new Promise<void>((r) => (finish = r))
  const agent = defineAgent<{ i: number; pad: string }>({
    name: "noop",
    turn: () => {
      if (++done === tasks) finish()
      return Promise.resolve(Done(null))
    }
  })
  for (let i = 0; i < tasks; i += 1_000) {
    const batch = Array.from({ length: Math.min(1_000, tasks - i) }, (_, k) =>
      agent.createTask({ ownerId: "o", payload: { i: i + k, pad: "x".repeat(72) } }))
    await orchestrator.enqueueTasks(agent, batch)
  }
  const url = await orchestrator.startServer()
  const streamUrl = `${url}/observability/api/events?emits=none`
  const child = withViewers === 0
    ? undefined
    : spawn(process.execPath, ["-e", VIEWERS, streamUrl, String(withViewers)], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
  if (child !== undefined) await new Promise((r) => child.once("message", r))
  await new Promise((r) => setTimeout(r, 500))
  orchestrator.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 100 }) })
  const cpu = await redisCpuSeconds(redis.admin)
  const started = performance.now()
  await orchestrator.start()
  await all
  const ms = performance.now() - started
  const redisUs = ((await redisCpuSeconds(redis.admin)) - cpu) * 1e6 / tasks
  await new Promise((r) => setTimeout(r, 300))
  let seen: ReadonlyArray<number> = []
  if (child !== undefined) {
    child.send("stop")
    seen = await new Promise<ReadonlyArray<number>>((r) => child.once("message", (m) => r(m as ReadonlyArray<number>)))
  }
  await orchestrator.stop()
  console.log(
    `${label}: ${((tasks / ms) * 1000).toFixed(0)} jobs/s, Redis CPU ${redisUs.toFixed(1)} µs/job` +
      (seen.length > 0 ? `, events per viewer ${Math.min(...seen)}–${Math.max(...seen)}` : "")
  )
}

try {
  console.log(`${tasks} tasks drained by 100 slots, with 0 and ${viewers} live event streams open; Redis ${redis.version}\n`)
  for (let r = 0; r < reps; r++) {
    await drain("no viewers", 0)
    await drain(`${viewers} viewers`, viewers)
  }
} finally {
  await redis.stop()
}
