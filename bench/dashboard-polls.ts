/**
 * What an open dashboard's polling costs Redis: on a namespace of `--partitions` partitions and three agents,
 * `--done` finished tasks (a twentieth of them failed) and `--queued` waiting ones: 1 and 8 simulated pages poll
 * the JSON endpoints for `--seconds` at the rates dashboard.js does while events stream in (each endpoint at most
 * once per its throttle), then 1 page at its quiet rates (every 10 or 30 s). Prints Redis' CPU time and commands
 * per second, and each endpoint's HTTP latency (with `--commands`, the commands that took Redis' time).
 * Ours alone (BullMQ ships no dashboard).
 *
 *   node bench/dashboard-polls.ts [--partitions=8] [--done=30000] [--queued=10000] [--seconds=15] [--window=1h] [--commands]
 *
 * Nothing is asserted and nothing is written to docs.
 */
import { defineAgent, Done } from "../src/Agent.ts"
import { AgentWorkerConfig, ObservabilityConfig } from "../src/Config.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { readStats, resetStats } from "./commandstats.ts"
import { redisCpuSeconds, startRedis } from "./redis-server.ts"
import { median, percentile } from "./stats.ts"

const arg = (name: string, fallback: number) => {
  const v = Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback)
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`)
  return v
}
const partitions = arg("partitions", 8)
const done = arg("done", 30_000)
const queued = arg("queued", 10_000)
const seconds = arg("seconds", 15)
const window = process.argv.find((a) => a.startsWith("--window="))?.slice(9) ?? "1h"
if (!["15m", "1h", "6h", "24h"].includes(window)) throw new Error("--window must be one of 15m, 1h, 6h, 24h")
const showCommands = process.argv.includes("--commands")

/** What dashboard.js requests, and how often per second: while events stream in (its `soon` throttles), and quiet. */
const endpoints = [
  { path: `/overview?window=${window}`, busy: 1 / 0.5, quiet: 1 / 10 },
  { path: "/tasks?status=processing&limit=25", busy: 1 / 0.8, quiet: 0 },
  { path: `/agents?window=${window}`, busy: 1 / 2, quiet: 1 / 10 },
  { path: "/workers", busy: 1 / 3, quiet: 1 / 10 },
  { path: `/timeline?window=${window}`, busy: 1 / 3, quiet: 1 / 30 }
] as const satisfies ReadonlyArray<{ path: string; busy: number; quiet: number }>

const redis = await startRedis()
const namespace = `polls-${Date.now() % 100_000}`
const options = { namespace, redisUrl: redis.url, partitions }
const names = ["research", "support", "triage"]

const worker = new Orchestrator(options)
const agents = names.map((name) =>
  defineAgent<{ i: number }>({
    name,
    turn: (ctx) => ctx.payload.i % 20 === 0 ? Promise.reject(new Error("bench failure")) : Promise.resolve(Done({ ok: true }))
  })
)
const enqueue = async (o: Orchestrator, count: number) => {
  for (let i = 0; i < count; i += 1_000) {
    const chunk = Math.min(1_000, count - i)
    for (const [a, agent] of agents.entries()) {
      const n = Math.floor(chunk / agents.length) + (a < chunk % agents.length ? 1 : 0)
      await o.enqueueTasks(agent, Array.from({ length: n }, (_, k) => agent.createTask({ ownerId: `owner-${k % 50}`, payload: { i: i + k } })))
    }
  }
}
await enqueue(worker, done)
for (const agent of agents) {
  worker.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 50, maxRetries: 0 }) })
}
await worker.start()

/** An HTTP server of the namespace (a process serving the dashboard, working no task), and a JSON GET on it. */
const openServer = async () => {
  const server = new Orchestrator({ ...options, observabilityConfig: new ObservabilityConfig({ port: 0, host: "127.0.0.1" }) })
  const url = `${await server.startServer()}/observability/api`
  const get = async (path: string) => {
    const res = await fetch(`${url}${path}`)
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`)
    return res.json() as Promise<Record<string, unknown>>
  }
  return { server, get }
}

// Drained when the queues are empty and nothing is in flight (read from the gauges the dashboard uses).
const setup = await openServer()
for (;;) {
  const o = await setup.get("/overview?window=1h") as { tasksByStatus: Record<string, number> }
  const s = o.tasksByStatus
  if ((s.queued ?? 0) + (s.processing ?? 0) === 0 && (s.completed ?? 0) + (s.failed ?? 0) >= done) break
  await new Promise((r) => setTimeout(r, 250))
}
await new Promise((r) => setTimeout(r, 1_000)) // the metrics projector catches up
await worker.stop()
await enqueue(setup.server, queued)
await setup.server.stop()
console.log(`namespace: ${partitions} partitions, 3 agents, ${done} finished tasks, ${queued} queued; window ${window}; ${seconds} s per run\n`)

/**
 * `pages` pages opened on a fresh server and left open for `seconds`, each polling every endpoint at its rate
 * (staggered): Redis' CPU time and commands per second, and each endpoint's HTTP latency.
 */
const simulate = async (pages: number, rate: (e: (typeof endpoints)[number]) => number) => {
  const { server, get } = await openServer()
  const latencies = new Map<string, Array<number>>(endpoints.map((e) => [e.path, []]))
  await resetStats(redis.admin)
  const cpu = await redisCpuSeconds(redis.admin)
  const until = performance.now() + seconds * 1000
  const poll = async (e: (typeof endpoints)[number], offset: number) => {
    const every = 1000 / rate(e)
    await new Promise((r) => setTimeout(r, offset * every))
    while (performance.now() < until) {
      const t = performance.now()
      await get(e.path)
      latencies.get(e.path)!.push(performance.now() - t)
      await new Promise((r) => setTimeout(r, Math.max(0, every - (performance.now() - t))))
    }
  }
  if (pages === 0) await new Promise((r) => setTimeout(r, seconds * 1000))
  await Promise.all(Array.from({ length: pages }, (_, v) => endpoints.filter((e) => rate(e) > 0).map((e) => poll(e, v / pages))).flat())
  const redisMs = ((await redisCpuSeconds(redis.admin)) - cpu) * 1000 / seconds
  const stats = await readStats(redis.admin)
  const commands = Object.entries(stats).filter(([name]) => !/^(config|info)/.test(name)).reduce((n, [, c]) => n + c.calls, 0) / seconds
  await server.stop()
  console.log(`${String(pages).padStart(2)} page(s): Redis ${redisMs.toFixed(1)} ms/s, ${Math.round(commands)} commands/s`)
  if (showCommands) {
    const top = Object.entries(stats).sort(([, a], [, b]) => b.usec - a.usec).slice(0, 8)
    console.log(`    commands by Redis time: ${top.map(([name, c]) => `${name} ${(c.usec / 1000 / seconds).toFixed(1)} ms/s (${Math.round(c.calls / seconds)}/s)`).join(", ")}`)
  }
  for (const [path, ms] of latencies) {
    if (ms.length > 0) console.log(`    ${path.padEnd(36)} ${String(ms.length).padStart(4)} requests, HTTP p50 ${median(ms).toFixed(1)} p99 ${percentile(ms, 99).toFixed(1)} ms`)
  }
}

console.log("no page open (the server alone):")
await simulate(0, () => 0)
console.log("while events stream in (the page refreshes each endpoint at most once per its throttle):")
for (const pages of [1, 8]) await simulate(pages, (e) => e.busy)
console.log("quiet (the page's 10 s and 30 s timers):")
await simulate(1, (e) => e.quiet)
await redis.stop()
