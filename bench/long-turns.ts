/**
 * What keeping long turns alive costs: `--turns` tasks each in a turn that lasts longer than the window (an LLM
 * call, a tool), in one orchestrator with that many slots, against a BullMQ `Worker` with the same concurrency
 * holding as many jobs. Each alone on a private Redis, measured over `--seconds` once every turn has started
 * (and a settling period): Redis CPU, commands per second, the change of Redis' data set (`used_memory_dataset`:
 * the keys, not the client buffers) and the growth of the partition log (kept `eventLogRetention`, a day by
 * default), and the client's CPU. Ours renews every lease every `heartbeatInterval` (default 5 s); BullMQ extends its
 * locks (`lockDuration` 30 s) every 15 s. With `--progress=N`, every turn also reports progress N times a second,
 * as a streaming model call does: ours with `ctx.emit` (a PUBLISH, in no history), BullMQ with `job.updateProgress`
 * (written to the job and its event stream).
 *
 *   node bench/long-turns.ts [--turns=1000] [--seconds=30] [--heartbeat=5] [--progress=0]
 *
 * This is a fleet of LLM agents' steady state: turns of seconds to minutes, many in flight. Nothing is asserted.
 */
import { Queue, Worker } from "bullmq"
import { Continue, defineAgent } from "../src/Agent.ts"
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { partitionKeys } from "../streams/Keys.ts"
import { readStats, resetStats } from "./commandstats.ts"
import { redisCpuSeconds, startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const turns = Number(arg("turns") ?? 1000)
const seconds = Number(arg("seconds") ?? 30)
const heartbeat = Number(arg("heartbeat") ?? 5)
const progress = Number(arg("progress") ?? 0)
if (![turns, seconds].every((n) => Number.isInteger(n) && n >= 1) || !(heartbeat > 0) || !(progress >= 0 && progress <= 20)) {
  throw new Error("--turns and --seconds must be positive integers, --heartbeat a positive number of seconds, --progress 0-20 a second")
}

/** Calls `report(n)` `progress` times a second until `done` resolves. */
const reporting = async (done: Promise<unknown>, report: (n: number) => unknown) => {
  if (progress === 0) return done
  let over = false
  void done.then(() => (over = true))
  for (let n = 0; !over; n++) {
    await Promise.race([done, new Promise((r) => setTimeout(r, 1_000 / progress))])
    if (!over) await report(n)
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const redis = await startRedis()

interface Held {
  /** How many turns have started. */
  readonly started: () => number
  /** The partition log's length (0 for BullMQ, which has none; its events stream is reported instead). */
  readonly logLength: () => Promise<number>
  readonly close: () => Promise<void>
}

/** Holds `turns` turns in flight, waits for all to start and `settle`, then measures `seconds`. */
const measure = async (label: string, open: () => Promise<Held>) => {
  await redis.admin.flushall()
  const held = await open()
  try {
    const deadline = Date.now() + 60_000
    while (held.started() < turns) {
      if (Date.now() > deadline) throw new Error(`${label}: only ${held.started()} of ${turns} turns started`)
      await sleep(100)
    }
    await sleep(Math.max(3_000, heartbeat * 1_000))
    await resetStats(redis.admin)
    const dataset = async () => Number(/used_memory_dataset:(\d+)/.exec(await redis.admin.info("memory"))![1])
    const memory = await dataset()
    const log = await held.logLength()
    const server = await redisCpuSeconds(redis.admin)
    const client = process.cpuUsage()
    await sleep(seconds * 1_000)
    const clientCpu = process.cpuUsage(client)
    const serverMs = ((await redisCpuSeconds(redis.admin)) - server) * 1_000
    const grown = (await dataset()) - memory
    const logGrown = (await held.logLength()) - log
    const stats = Object.entries(await readStats(redis.admin)).sort((a, b) => b[1].calls - a[1].calls)
    const total = stats.reduce((n, [, s]) => n + s.calls, 0)
    const perHour = 3_600 / seconds
    const redisPerTurn = (serverMs * 1_000) / seconds / turns
    const clientMs = (clientCpu.user + clientCpu.system) / 1_000 / seconds
    const logPerTurnHour = (logGrown * perHour) / turns
    console.log(
      `${label}: Redis CPU ${(serverMs / seconds).toFixed(1)} ms/s (${redisPerTurn.toFixed(1)} µs/s per turn), ` +
        `${(total / seconds).toFixed(0)} commands/s, client CPU ${clientMs.toFixed(1)} ms/s\n` +
        `  data set ${grown >= 0 ? "+" : ""}${(grown / 1e3).toFixed(0)} KB over the window, ` +
        `partition log +${logPerTurnHour.toFixed(0)} entries per turn-hour ` +
        `(${((logGrown * perHour * 24) / 1e6).toFixed(1)} million a day)\n` +
        `  ${stats.slice(0, 8).map(([c, s]) => `${c} ${(s.calls / seconds).toFixed(1)}`).join(", ")}`
    )
  } finally {
    await held.close()
  }
}

try {
  console.log(
    `${turns} turns in flight for ${seconds} s, each reporting progress ${progress} times a second; ` +
      `our heartbeatInterval ${heartbeat} s; Redis ${redis.version}\n`
  )
  await measure(`ours (${turns} slots)`, async () => {
    let started = 0
    let release = () => {}
    const released = new Promise<void>((r) => (release = r))
    const orchestrator = new Orchestrator({ namespace: "long", redisUrl: redis.url })
    const agent = defineAgent({
      name: "slow",
      turn: async (ctx) => {
        started++
        const ended = Promise.race([released, new Promise((r) => ctx.signal.addEventListener("abort", r))])
        await reporting(ended, (n) => ctx.emit("progress", { n }))
        return Continue(ctx.payload)
      }
    })
    orchestrator.registerRunner({
      agent,
      agentWorkerConfig: new AgentWorkerConfig({ workers: turns, heartbeatInterval: heartbeat, turnTimeout: 3_600 })
    })
    await orchestrator.start()
    for (let i = 0; i < turns; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, turns - i) }, (_, k) =>
          orchestrator.enqueueTask(agent, agent.createTask({ ownerId: "o", payload: { i: i + k } })))
      )
    }
    const log = partitionKeys({ namespace: "long", partitions: 1 }, 0).events
    return {
      started: () => started,
      logLength: () => redis.admin.xlen(log),
      close: async () => {
        release()
        await orchestrator.stop()
      }
    }
  })
  await measure(`BullMQ (concurrency ${turns})`, async () => {
    let started = 0
    let release = () => {}
    const released = new Promise<void>((r) => (release = r))
    const connection = { host: "127.0.0.1", port: redis.port }
    const queue = new Queue("long", { connection })
    const worker = new Worker("long", async (job) => {
      started++
      await reporting(released, (n) => job.updateProgress({ n }))
      return {}
    }, { connection, concurrency: turns })
    await queue.addBulk(Array.from({ length: turns }, (_, i) => ({ name: "slow", data: { i } })))
    return {
      started: () => started,
      logLength: () => redis.admin.xlen("bull:long:events"),
      close: async () => {
        release()
        await worker.close()
        await queue.close()
      }
    }
  })
} finally {
  await redis.stop()
}
