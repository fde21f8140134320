/**
 * What the client's young-generation collections cost, ours vs BullMQ: each phase runs in a child process under
 * `node --trace-gc-nvp`, and the scavenges inside its measured window are summed up — how much of what the phase
 * allocated was still reachable at a scavenge (and so copied, then promoted), the pauses, and the CPU of V8's
 * helper threads. Objects that outlive a scavenge make it slow; on two cores its helpers compete with Redis.
 *
 *   node bench/gc-survival.ts [--phases=projection,one-slot,single-enqueue,bulk-enqueue] [--tasks=20000]
 *
 * - `projection`: ours only: the metrics projector folding the log of `--tasks` finished tasks (catch-up);
 * - `one-slot`: one worker slot draining a prefilled queue, 2 s measured after 1.5 s (ours with its projector);
 * - `single-enqueue`: enqueues of one task per call, one at a time (`enqueueTask` / `add`), a quarter of `--tasks`;
 * - `bulk-enqueue`: enqueues of 50 tasks per call (`enqueueTasks` / `addBulk`).
 *
 * Nothing is asserted; ADR 0025 says what the numbers showed and what changed because of them.
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Queue, Worker } from "bullmq"
import { Effect } from "effect"
import { MetricsProjector } from "../projections/Projector.ts"
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { benchAgent } from "./ours.ts"
import { makePayload } from "./payload.ts"
import { median } from "./stats.ts"
import { startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const tasks = Number(arg("tasks") ?? 20_000)
if (!Number.isInteger(tasks) || tasks < 1000) throw new Error("--tasks must be an integer of at least 1000")
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The window a child measures, in ms since its start (V8's trace counts from the same moment, give or take). */
const mark = (what: "start" | "end") => console.log(`@mark ${what} ${performance.now().toFixed(1)}`)

// ---------------------------------------------------------------------------------------------------------
// The child: one phase of one side

/** One system as the phases drive it. */
interface Side {
  readonly enqueueOne: (i: number) => Promise<unknown>
  /** Enqueues the k-th batch of 50. */
  readonly enqueueBatch: (k: number) => Promise<unknown>
  /** Starts `slots` turn slots on the queue. */
  readonly work: (slots: number) => Promise<void>
  /** Ours only: folds the whole log into the metrics (catch-up); how many entries. */
  readonly project?: () => Promise<number>
  readonly close: () => Promise<void>
}

const batchOf = (k: number) => Array.from({ length: 50 }, (_, j) => makePayload(k * 50 + j))

const bullmqSide = async (url: string, namespace: string, onJob: () => void): Promise<Side> => {
  const connection = { url }
  const queue = new Queue(namespace, { connection })
  await queue.waitUntilReady()
  let worker: Worker | undefined
  return {
    enqueueOne: (i) => queue.add("noop", makePayload(i)),
    enqueueBatch: (k) => queue.addBulk(batchOf(k).map((data) => ({ name: "noop", data }))),
    work: async (slots) => {
      worker = new Worker(namespace, async () => (onJob(), { done: true }), { connection, concurrency: slots })
      await worker.waitUntilReady()
    },
    close: async () => {
      await worker?.close()
      await queue.close()
    }
  }
}

const oursSide = async (url: string, namespace: string, onJob: () => void, projectMetrics: boolean): Promise<Side> => {
  const orchestrator = new Orchestrator({ redisUrl: url, namespace, projectMetrics })
  const agent = benchAgent(() => () => (onJob(), { _tag: "Done" as const }))
  return {
    enqueueOne: (i) => orchestrator.enqueueTask(agent, agent.createTask({ ownerId: "gc", payload: makePayload(i) })),
    enqueueBatch: (k) => orchestrator.enqueueTasks(agent, batchOf(k).map((payload) => agent.createTask({ ownerId: "gc", payload }))),
    work: async (slots) => {
      orchestrator.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: slots }) })
      await orchestrator.start()
    },
    project: async () => {
      await orchestrator.stop()
      return orchestrator.runEffect(Effect.gen(function*() {
        return yield* (yield* MetricsProjector).catchUp()
      }))
    },
    close: () => orchestrator.stop()
  }
}

const child = async (phase: string, sideName: string, url: string) => {
  let done = 0
  const onJob = () => void done++
  const namespace = `gc${Date.now()}`
  const side = sideName === "bullmq"
    ? await bullmqSide(url, namespace, onJob)
    : await oursSide(url, namespace, onJob, phase === "one-slot")
  /** Runs `body` between the marks and prints what it did. */
  const measured = async (body: () => Promise<string>) => {
    mark("start")
    const result = await body()
    mark("end")
    console.log(`@result ${result}`)
  }
  if (phase === "single-enqueue") {
    for (let i = 0; i < 1000; i++) await side.enqueueOne(i)
    await measured(async () => {
      for (let i = 0; i < tasks / 4; i++) await side.enqueueOne(i)
      return `${tasks / 4} tasks enqueued`
    })
  } else if (phase === "bulk-enqueue") {
    for (let k = 0; k < 40; k++) await side.enqueueBatch(k)
    await measured(async () => {
      for (let k = 40; k < 40 + tasks / 50; k++) await side.enqueueBatch(k)
      return `${tasks} tasks enqueued`
    })
  } else if (phase === "one-slot") {
    for (let k = 0; k < tasks / 50; k++) await side.enqueueBatch(k)
    await side.work(1)
    await sleep(1_500)
    const before = done
    await measured(async () => {
      await sleep(2_000)
      return `${done - before} jobs in 2 s`
    })
  } else {
    // projection: 100 slots drain the queue with nobody projecting, then the whole log is folded.
    for (let k = 0; k < tasks / 50; k++) await side.enqueueBatch(k)
    await side.work(100)
    while (done < tasks) await sleep(20)
    await measured(async () => `${await side.project!()} log entries folded`)
  }
  await side.close()
}

// ---------------------------------------------------------------------------------------------------------
// The parent: runs the children and sums up their scavenges

interface Scavenge {
  readonly at: number
  readonly allocatedMb: number
  readonly survivedMb: number
  readonly pauseMs: number
  readonly helpersMs: number
}

const SCAVENGE = /^\[\d+:0x[0-9a-f]+:\d+\]\s+(\d+) ms: pause=([\d.]+) .*gc=s /

const scavengesOf = (trace: string): Array<Scavenge> =>
  trace.split("\n").flatMap((line) => {
    const m = SCAVENGE.exec(line)
    if (m === null) return []
    const field = (name: string) => Number(new RegExp(` ${name}=([\\d.]+)`).exec(line)?.[1] ?? 0)
    return [{
      at: Number(m[1]),
      pauseMs: Number(m[2]),
      allocatedMb: field("allocated") / 1e6,
      survivedMb: field("new_space_survived") / 1e6,
      helpersMs: field("background.scavenge.parallel")
    }]
  })

const runChild = (phase: string, side: string, url: string) => {
  const out = execFileSync(process.execPath, ["--trace-gc-nvp", fileURLToPath(import.meta.url), `--child=${phase}`, `--side=${side}`, `--url=${url}`, `--tasks=${tasks}`], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024
  })
  const at = (what: string) => Number(new RegExp(`@mark ${what} ([\\d.]+)`).exec(out)?.[1])
  const [from, to] = [at("start"), at("end")]
  const inWindow = scavengesOf(out).filter((s) => s.at >= from && s.at <= to)
  const sum = (f: (s: Scavenge) => number) => inWindow.reduce((n, s) => n + f(s), 0)
  const seconds = (to - from) / 1000
  const result = /@result (.*)/.exec(out)?.[1] ?? "?"
  console.log(
    `${phase.padEnd(13)} ${side.padEnd(7)} ${String(inWindow.length).padStart(3)} scavenges in ${seconds.toFixed(2)} s; ` +
      `survived ${sum((s) => s.survivedMb).toFixed(1)} of ${sum((s) => s.allocatedMb).toFixed(0)} MB ` +
      `(${((100 * sum((s) => s.survivedMb)) / Math.max(1, sum((s) => s.allocatedMb))).toFixed(1)} %), ` +
      `pause p50 ${inWindow.length === 0 ? "-" : median(inWindow.map((s) => s.pauseMs)).toFixed(1)} ms, total ${sum((s) => s.pauseMs).toFixed(0)} ms, ` +
      `helper threads ${sum((s) => s.helpersMs).toFixed(0)} ms; ${result}`
  )
}

const childPhase = arg("child")
if (childPhase !== undefined) {
  await child(childPhase, arg("side") ?? "ours", arg("url")!)
  process.exit(0)
}
const phases = (arg("phases") ?? "projection,one-slot,single-enqueue,bulk-enqueue").split(",")
const redis = await startRedis()
try {
  console.log(`young-generation collections per phase (${tasks} tasks; Node ${process.version}, Redis ${redis.version})\n`)
  for (const phase of phases) {
    for (const side of phase === "projection" ? ["ours"] : ["ours", "bullmq"]) {
      await redis.admin.flushall()
      runChild(phase, side, redis.url)
    }
  }
} finally {
  await redis.stop()
}
