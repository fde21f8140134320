/**
 * The seven scenarios of the issue, each written once against `SystemRun` and run for both systems.
 * A scenario returns its rate (jobs/s or turns/s), its latency distributions (ms) and any values (bytes);
 * `run.ts` takes care of fresh queues, warm-up, alternation, repetitions and medians.
 *
 * Timing: `performance.now()` in this process for everything: enqueue is stamped just before the call,
 * start when the turn handler runs, completion when the observer reads the completion event.
 */
import type { Redis } from "ioredis"
import { observeCompletions, type Observer } from "./observer.ts"
import { makePayload, type BenchPayload } from "./payload.ts"
import { type Latency, summarize } from "./stats.ts"
import type { SystemRun, TurnHandler, TurnResult } from "./system.ts"
import type { Slowest } from "./commandstats.ts"

export interface Sizes {
  readonly enqueueSingle: number
  readonly enqueueBulk: number
  readonly workersC1: number
  readonly workersC100: number
  /** Scenario 5: jobs per second and seconds of load. */
  readonly latencyRate: number
  readonly latencySeconds: number
  readonly memory: number
  readonly multiTurnTasks: number
  /** Scenario 7: tasks run one after another for the per-turn latency. */
  readonly multiTurnLone: number
}

export interface ScenarioContext {
  readonly run: SystemRun
  readonly port: number
  readonly admin: Redis
  readonly sizes: Sizes
  /** Starts the command-statistics window (CONFIG RESETSTAT) at the start of the measured part. */
  readonly markStats: () => Promise<void>
}

export interface Measurement {
  readonly jobs: number
  readonly rate: number
  readonly latency: Readonly<Record<string, Latency>>
  readonly values: Readonly<Record<string, number>>
  /** Bytes per task by key kind (memory scenario). */
  readonly breakdown?: ReadonlyArray<{ readonly kind: string; readonly keys: number; readonly bytesPerTask: number }>
  /** The window's longest single Redis command (set by the runner, from the SLOWLOG). */
  readonly slowest?: Slowest
}

export interface Scenario {
  readonly id: string
  readonly title: string
  readonly rateUnit: "jobs/s" | "turns/s"
  /** The latency shown in the summary table. */
  readonly mainLatency: string
  /** Whether BullMQ's moveToWait continuation runs too. */
  readonly multiTurn?: boolean
  readonly run: (ctx: ScenarioContext) => Promise<Measurement>
}

export const TIMEOUT_MS = 180_000
export const BULK = 50
const done: TurnResult = { _tag: "Done" }
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The promise, or a rejection after `ms` (the timer is cleared either way). */
const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Enqueues payloads `from..to-1` in bulk calls of 50, a few calls in flight (not measured). */
export const prefill = async (run: SystemRun, from: number, to: number, inFlight = 8): Promise<void> => {
  let next = from
  const lane = async () => {
    while (next < to) {
      const start = next
      next = Math.min(to, next + BULK)
      const batch: Array<BenchPayload> = []
      for (let i = start; i < next; i++) batch.push(makePayload(i))
      await run.enqueueBulk(batch)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane))
}

const enqueueSingle: Scenario = {
  id: "enqueue-single",
  title: "1. Single enqueue (one at a time)",
  rateUnit: "jobs/s",
  mainLatency: "call",
  run: async ({ run, sizes, markStats }) => {
    const n = sizes.enqueueSingle
    const lat: Array<number> = []
    await markStats()
    const t0 = performance.now()
    for (let i = 0; i < n; i++) {
      const t = performance.now()
      await run.enqueue(makePayload(i))
      lat.push(performance.now() - t)
    }
    const secs = (performance.now() - t0) / 1000
    return { jobs: n, rate: n / secs, latency: { call: summarize(lat) }, values: {} }
  }
}

let BULK_CALL = BULK
/** Sets the tasks per call of the bulk-enqueue scenario (`--bulk`; default 50, the issue's). */
export const setBulkSize = (tasks: number): void => {
  BULK_CALL = tasks
}

const enqueueBulk: Scenario = {
  id: "enqueue-bulk",
  get title() {
    return `2. Bulk enqueue (${BULK_CALL} per call)`
  },
  rateUnit: "jobs/s",
  mainLatency: "call",
  run: async ({ run, sizes, markStats }) => {
    const calls = Math.max(1, Math.round(sizes.enqueueBulk / BULK_CALL))
    const lat: Array<number> = []
    await markStats()
    const t0 = performance.now()
    for (let c = 0; c < calls; c++) {
      const batch = Array.from({ length: BULK_CALL }, (_, k) => makePayload(c * BULK_CALL + k))
      const t = performance.now()
      await run.enqueueBulk(batch)
      lat.push(performance.now() - t)
    }
    const secs = (performance.now() - t0) / 1000
    return { jobs: calls * BULK_CALL, rate: (calls * BULK_CALL) / secs, latency: { call: summarize(lat) }, values: {} }
  }
}

/** Prefilled queue, then workers with `concurrency`: rate from the first start to the last completion. */
const drain = (concurrency: number, size: (s: Sizes) => number, id: string, title: string): Scenario => ({
  id,
  title,
  rateUnit: "jobs/s",
  mainLatency: "start→complete",
  run: async ({ run, port, sizes, markStats }) => {
    const n = size(sizes)
    await prefill(run, 0, n)
    const startAt = new Float64Array(n)
    const lat: Array<number> = []
    let first = Infinity
    let last = 0
    const observer = await observeCompletions(port, run.completions, (i, at) => {
      lat.push(at - startAt[i]!)
      last = at
    })
    await markStats()
    await run.startWorkers(concurrency, (p) => {
      const t = performance.now()
      startAt[p.i] = t
      if (t < first) first = t
      return done
    })
    try {
      await observer.waitFor(n, TIMEOUT_MS)
    } finally {
      observer.stop()
    }
    return { jobs: n, rate: n / ((last - first) / 1000), latency: { "start→complete": summarize(lat) }, values: {} }
  }
})

const latencyAtRate: Scenario = {
  id: "latency",
  title: "5. End-to-end latency at a fixed moderate rate",
  rateUnit: "jobs/s",
  mainLatency: "enqueue→start",
  run: async ({ run, port, sizes, markStats }) => {
    const rate = sizes.latencyRate
    const n = Math.round(rate * sizes.latencySeconds)
    const enqAt = new Float64Array(n)
    const toStart: Array<number> = []
    const toComplete: Array<number> = []
    let first = Infinity
    let last = 0
    const observer = await observeCompletions(port, run.completions, (i, at) => {
      toComplete.push(at - enqAt[i]!)
      last = at
    })
    await run.startWorkers(10, (p) => {
      toStart.push(performance.now() - enqAt[p.i]!)
      return done
    })
    await sleep(300) // the workers are blocked on their queue before the first job arrives
    await markStats()
    const interval = 1000 / rate
    let due = performance.now()
    const errors: Array<unknown> = []
    try {
      for (let i = 0; i < n; i++) {
        const wait = due - performance.now()
        if (wait > 0) await sleep(wait)
        const t = performance.now()
        if (t < first) first = t
        enqAt[i] = t
        run.enqueue(makePayload(i)).catch((e: unknown) => errors.push(e))
        due += interval
      }
      await observer.waitFor(n, TIMEOUT_MS)
    } finally {
      observer.stop()
    }
    if (errors.length > 0) throw new Error(`${errors.length} enqueues failed: ${String(errors[0])}`)
    return {
      jobs: n,
      rate: n / ((last - first) / 1000),
      latency: { "enqueue→start": summarize(toStart), "enqueue→complete": summarize(toComplete) },
      values: { offeredRate: rate }
    }
  }
}

interface MemoryInfo {
  readonly used: number
  readonly clients: number
}

const memoryInfo = async (admin: Redis): Promise<MemoryInfo> => {
  const info = await admin.info("memory")
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, "m").exec(info)?.[1] ?? Number.NaN)
  return { used: field("used_memory"), clients: field("mem_clients_normal") }
}

/** MEMORY USAGE of every key of the run, summed by kind (task/job id replaced by `*`). */
const keyBreakdown = async (admin: Redis, run: SystemRun, tasks: number) => {
  const keys: Array<string> = []
  let cursor = "0"
  do {
    const [next, batch] = await admin.scan(cursor, "COUNT", 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== "0")
  const kinds = new Map<string, { keys: number; bytes: number }>()
  for (let k = 0; k < keys.length; k += 500) {
    const chunk = keys.slice(k, k + 500)
    const p = admin.pipeline()
    for (const key of chunk) p.memory("USAGE", key, "SAMPLES", 0)
    const replies = (await p.exec()) ?? []
    chunk.forEach((key, j) => {
      const kind = run.keyKind(key)
      if (kind === undefined) return
      const entry = kinds.get(kind) ?? { keys: 0, bytes: 0 }
      entry.keys++
      entry.bytes += Number(replies[j]?.[1] ?? 0)
      kinds.set(kind, entry)
    })
  }
  return [...kinds.entries()]
    .map(([kind, v]) => ({ kind, keys: v.keys, bytesPerTask: v.bytes / tasks }))
    .sort((a, b) => b.bytesPerTask - a.bytesPerTask)
}

const memory: Scenario = {
  id: "memory",
  title: "6. Redis memory per finished task (history retained) / job (defaults)",
  rateUnit: "jobs/s",
  mainLatency: "start→complete",
  run: async ({ run, port, admin, sizes, markStats }) => {
    const n = sizes.memory
    let first = Infinity
    let last = 0
    const observer = await observeCompletions(port, run.completions, (_i, at) => (last = at))
    await run.startWorkers(50, () => {
      const t = performance.now()
      if (t < first) first = t
      return done
    })
    await sleep(300)
    const before = await memoryInfo(admin)
    await markStats()
    try {
      await prefill(run, 0, n)
      await observer.waitFor(n, TIMEOUT_MS)
    } finally {
      observer.stop()
    }
    await sleep(500)
    const after = await memoryInfo(admin)
    const perTask = (after.used - after.clients - (before.used - before.clients)) / n
    return {
      jobs: n,
      rate: n / ((last - first) / 1000),
      latency: {},
      values: { bytesPerTask: perTask, usedMemoryDelta: after.used - before.used },
      breakdown: await keyBreakdown(admin, run, n)
    }
  }
}

let TURNS = 5
/** Sets the turns per task of the multi-turn scenario (`--turns`; default 5). */
export const setMultiTurnTurns = (turns: number): void => {
  TURNS = turns
}
/** The multi-turn scenario's per-task latency, as the report names it. */
export const taskLatencyName = (): string => `task (${TURNS} turns)`

const multiTurn: Scenario = {
  id: "multi-turn",
  get title() {
    return `7. Multi-turn tasks (${TURNS} turns, no-op agent)`
  },
  rateUnit: "turns/s",
  mainLatency: "turn→next turn",
  multiTurn: true,
  run: async ({ run, port, sizes, markStats }) => {
    const n = sizes.multiTurnTasks
    const lone = sizes.multiTurnLone
    const turnStart = new Float64Array((n + lone) * TURNS)
    const enqAt = new Float64Array(n + lone)
    const gaps: Array<number> = []
    const perTask: Array<number> = []
    let first = Infinity
    let last = 0
    const waiting = new Map<number, () => void>()
    const observer = await observeCompletions(port, run.completions, (i, at) => {
      if (i < n) last = at
      else {
        perTask.push(at - enqAt[i]!)
        waiting.get(i)?.()
      }
    })
    const handler: TurnHandler = (p) => {
      const t = performance.now()
      turnStart[p.i * TURNS + p.turn] = t
      if (t < first) first = t
      if (p.i >= n && p.turn > 0) gaps.push(t - turnStart[p.i * TURNS + p.turn - 1]!)
      return p.turn + 1 < TURNS ? { _tag: "Continue", payload: makePayload(p.i, p.turn + 1) } : done
    }
    try {
      // Throughput: n tasks queued, 10 turns at a time.
      await prefill(run, 0, n)
      await markStats()
      await run.startWorkers(10, handler)
      await observer.waitFor(n, TIMEOUT_MS)
      // Per-turn latency: one task at a time on an otherwise idle worker.
      for (let i = n; i < n + lone; i++) {
        const finished = new Promise<void>((resolve) => waiting.set(i, resolve))
        enqAt[i] = performance.now()
        await run.enqueue(makePayload(i))
        await withTimeout(finished, 30_000, `lone task ${i}`)
      }
    } finally {
      observer.stop()
    }
    return {
      jobs: n * TURNS,
      rate: (n * TURNS) / ((last - first) / 1000),
      latency: { "turn→next turn": summarize(gaps), [taskLatencyName()]: summarize(perTask) },
      values: {}
    }
  }
}

export const scenarios: ReadonlyArray<Scenario> = [
  enqueueSingle,
  enqueueBulk,
  drain(1, (s) => s.workersC1, "workers-c1", "3. Worker concurrency 1 (queue prefilled)"),
  drain(100, (s) => s.workersC100, "workers-c100", "4. Worker concurrency 100 (queue prefilled)"),
  latencyAtRate,
  memory,
  multiTurn
]

export type { Observer }
