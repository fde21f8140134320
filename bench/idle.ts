/**
 * What a worker process costs while it has nothing to do: an orchestrator with one agent and `--slots`
 * turn slots (its maintenance and metrics projector included, as `npm start` runs them) against a BullMQ
 * `Worker` with the same concurrency, each alone on a private Redis, measured over `--seconds` after a
 * settling period. Prints the commands per second Redis receives (INFO commandstats) and the client's CPU.
 *
 *   node bench/idle.ts [--slots=100] [--seconds=20]
 *
 * Fleets keep many idle processes, so no per-slot or per-task polling may hide here. Nothing is asserted.
 */
import { Worker } from "bullmq"
import { defineAgent, Done } from "../src/Agent.ts"
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { readStats, resetStats } from "./commandstats.ts"
import { redisCpuSeconds, startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const slots = Number(arg("slots") ?? 100)
const seconds = Number(arg("seconds") ?? 20)
if (![slots, seconds].every((n) => Number.isInteger(n) && n >= 1)) throw new Error("--slots and --seconds must be positive integers")

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const redis = await startRedis()

/** Runs `open` (which returns its closer), lets it settle, then measures `seconds` of idling. */
const idle = async (label: string, open: () => Promise<() => Promise<void>>) => {
  await redis.admin.flushall()
  const close = await open()
  try {
    await sleep(3_000)
    await resetStats(redis.admin)
    const server = await redisCpuSeconds(redis.admin)
    const client = process.cpuUsage()
    await sleep(seconds * 1_000)
    const clientCpu = process.cpuUsage(client)
    const serverMs = ((await redisCpuSeconds(redis.admin)) - server) * 1_000
    const stats = Object.entries(await readStats(redis.admin)).sort((a, b) => b[1].calls - a[1].calls)
    const total = stats.reduce((n, [, s]) => n + s.calls, 0)
    console.log(
      `${label}: ${(total / seconds).toFixed(1)} commands/s, client CPU ${((clientCpu.user + clientCpu.system) / 1_000 / seconds).toFixed(1)} ms/s, ` +
        `Redis CPU ${(serverMs / seconds).toFixed(1)} ms/s\n  ${stats.map(([c, s]) => `${c} ${(s.calls / seconds).toFixed(2)}`).join(", ")}`
    )
  } finally {
    await close()
  }
}

try {
  console.log(`idle for ${seconds} s with ${slots} slots; Redis ${redis.version}\n`)
  await idle(`ours (${slots} slots)`, async () => {
    const orchestrator = new Orchestrator({ namespace: "idle", redisUrl: redis.url })
    const agent = defineAgent({ name: "noop", turn: () => Promise.resolve(Done(null)) })
    orchestrator.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: slots }) })
    await orchestrator.start()
    return () => orchestrator.stop()
  })
  await idle(`BullMQ (concurrency ${slots})`, async () => {
    const worker = new Worker("idle", async () => ({}), { connection: { host: "127.0.0.1", port: redis.port }, concurrency: slots })
    return () => worker.close()
  })
} finally {
  await redis.stop()
}
