/**
 * The metrics projection as a pure fold: partition-log envelopes → time buckets of counters and
 * latency histograms, per agent and overall (`__all__`).
 *
 * Invariants kept here:
 * - a bucket is chosen from the event's own `at`, never from the wall clock, so a replay of the same log
 *   gives the same buckets, byte for byte;
 * - every bucket field is a non-negative integer and buckets merge by field-wise addition (counters, sums,
 *   counts and histogram bins alike), so folding a log in any chunking and adding the chunks' buckets
 *   equals folding it at once (the projector relies on this: it commits each batch with HINCRBY);
 * - the per-task memory (`open`) holds only tasks that have not finished: a terminal event forgets the
 *   task, so the memory is bounded by the live tasks, not by history.
 *
 * Pure: no Redis, no clock. `projections/Projector.ts` runs it against the logs.
 */
import type { Envelope, LogFacts } from "../streams/TaskEvent.ts"

/** The pseudo-agent whose buckets count every agent. (Not a valid agent name: names start alphanumeric.) */
export const ALL_AGENTS = "__all__"

export interface MetricsOptions {
  /** Bucket width in seconds (a positive integer). */
  readonly bucketSeconds: number
  /** How long a bucket hash is kept after its last write, in seconds (its TTL; 0 keeps it). */
  readonly retentionSeconds: number
}

/** The user-facing timeline settings (the config class itself lives in `src/Config.ts`). */
export interface MetricsTimelineSettings {
  readonly timelineDuration: number
  readonly bucketSize: "seconds" | "minutes" | "hours" | "days"
  readonly retentionMultiplier: number
}

export const bucketUnitSeconds = { seconds: 1, minutes: 60, hours: 3_600, days: 86_400 } as const

/** Bucket width and retention from the timeline settings: one unit per bucket, duration × multiplier kept. */
export const metricsOptionsFromTimeline = (t: MetricsTimelineSettings): MetricsOptions => ({
  bucketSeconds: bucketUnitSeconds[t.bucketSize],
  retentionSeconds: Math.ceil(t.timelineDuration * t.retentionMultiplier)
})

/** The counters of a bucket, in display order. */
export const counterNames = [
  /** TaskEnqueued */
  "enqueued",
  /** TaskClaimed: an attempt (one turn) started */
  "started",
  /** TaskCompleted */
  "completed",
  /** Terminal failures: TaskFailed with decision "failed", TaskRecovered with decision "failed" */
  "failed",
  /** TaskCancelled */
  "cancelled",
  /** TaskFailed with decision "retry" or "backoff" */
  "retried",
  /** TaskRecovered (either decision: a worker lost its lease) */
  "recovered",
  /** TaskExpired */
  "expired",
  /** TurnCompleted (non-final turns) */
  "turns"
] as const
export type CounterName = typeof counterNames[number]

/** The two latencies sampled, each as `<name>.n` (count), `<name>.ms` (sum) and `<name>.h<bin>` fields. */
export const latencyNames = ["wait", "run"] as const
export type LatencyName = typeof latencyNames[number]

/**
 * One bucket: field → non-negative integer, absent fields are 0. Fields: the counters, then per latency
 * `wait.n`, `wait.ms`, `wait.h<i>` (and the same for `run`). Stored as one Redis hash, field for field.
 */
export type Bucket = Readonly<Record<string, number>>

/** What the fold remembers of an unfinished task to measure its next wait or run. */
export interface OpenTask {
  /** When it last entered the queue (enqueued or requeued); cleared by the claim that ends the wait. */
  readonly queuedAt?: number
  /** When its current attempt was claimed; cleared when the attempt ends. */
  readonly claimedAt?: number
}

export interface MetricsState {
  /** Buckets by `bucketId(agent, startSeconds)`. */
  readonly buckets: ReadonlyMap<string, Bucket>
  /** Unfinished tasks by id (a task with nothing to remember is absent). */
  readonly open: ReadonlyMap<string, OpenTask>
}

export const emptyState: MetricsState = { buckets: new Map(), open: new Map() }

export const bucketId = (agent: string, startSeconds: number): string => `${agent}:${startSeconds}`
export const parseBucketId = (id: string): { readonly agent: string; readonly startSeconds: number } => {
  const i = id.lastIndexOf(":")
  return { agent: id.slice(0, i), startSeconds: Number(id.slice(i + 1)) }
}

/** The start (seconds since the epoch) of the bucket holding time `at` (ms). */
export const bucketStart = (bucketSeconds: number, at: number): number =>
  Math.floor(at / (bucketSeconds * 1000)) * bucketSeconds

// ---------------------------------------------------------------------------------------------------------
// Histogram: fixed log-scale bins, the same for every bucket, so histograms merge by adding bins.
// Bin 0 holds durations under 1 ms; bin i ≥ 1 holds [2^((i-1)/4), 2^(i/4)) ms, i.e. four bins per doubling
// (each ≈ 19 % wide); the last bin also takes everything above its lower bound (> 34 years).

export const BINS_PER_DOUBLING = 4
export const HISTOGRAM_BINS = BINS_PER_DOUBLING * 40 + 2

export const histogramBin = (ms: number): number => {
  if (!(ms >= 1)) return 0
  return Math.min(HISTOGRAM_BINS - 1, 1 + Math.floor(BINS_PER_DOUBLING * Math.log2(ms)))
}

/** The bounds [lower, upper) of a bin, in ms. */
export const binBounds = (bin: number): readonly [number, number] =>
  bin <= 0 ? [0, 1] : [2 ** ((bin - 1) / BINS_PER_DOUBLING), 2 ** (bin / BINS_PER_DOUBLING)]

/**
 * Estimates the q-quantile (0 < q ≤ 1) of the samples counted in `bins` (bin → count): finds the bin of
 * the sample of rank ⌈q·n⌉ and interpolates inside it on the log scale. The estimate lies in the same bin
 * as the true value, so it is off by less than one bin width (≈ 19 %). `undefined` when there are no samples.
 */
export const estimateQuantile = (bins: ReadonlyMap<number, number>, q: number): number | undefined => {
  let total = 0
  for (const n of bins.values()) total += n
  if (total === 0) return undefined
  const rank = Math.min(total, Math.max(q * total, Number.MIN_VALUE))
  const sorted = [...bins.entries()].filter(([, n]) => n > 0).sort(([a], [b]) => a - b)
  let before = 0
  for (const [bin, n] of sorted) {
    if (before + n >= rank) {
      if (bin === 0) return 0
      const [lo, hi] = binBounds(bin)
      const fraction = (rank - before) / n
      return Math.min(hi, lo * (hi / lo) ** fraction)
    }
    before += n
  }
  return binBounds(sorted[sorted.length - 1]![0])[1]
}

/** The histogram bins of one latency in a bucket. */
export const latencyBins = (bucket: Bucket, name: LatencyName): ReadonlyMap<number, number> => {
  const prefix = `${name}.h`
  const bins = new Map<number, number>()
  for (const [field, n] of Object.entries(bucket)) {
    if (field.startsWith(prefix)) bins.set(Number(field.slice(prefix.length)), n)
  }
  return bins
}

// ---------------------------------------------------------------------------------------------------------
// Merging

/** Field-wise sum of two buckets. */
export const addBuckets = (a: Bucket, b: Bucket): Bucket => {
  const out: Record<string, number> = { ...a }
  for (const [field, n] of Object.entries(b)) out[field] = (out[field] ?? 0) + n
  return out
}

/** Bucket maps added key by key (buckets only one side has are kept as they are). */
export const mergeBucketMaps = (
  a: ReadonlyMap<string, Bucket>,
  b: ReadonlyMap<string, Bucket>
): ReadonlyMap<string, Bucket> => {
  const out = new Map(a)
  for (const [id, bucket] of b) {
    const prev = out.get(id)
    out.set(id, prev === undefined ? bucket : addBuckets(prev, bucket))
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// The fold

/** Encodes the per-task memory as stored in Redis: "queuedAt,claimedAt" (empty when unknown). */
export const encodeOpenTask = (t: OpenTask): string => `${t.queuedAt ?? ""},${t.claimedAt ?? ""}`
export const decodeOpenTask = (s: string): OpenTask => {
  const [q = "", c = ""] = s.split(",")
  return { ...(q === "" ? {} : { queuedAt: Number(q) }), ...(c === "" ? {} : { claimedAt: Number(c) }) }
}

const duration = (from: number, to: number): number => Math.max(0, Math.round(to - from))

type Event = LogFacts["event"]

/**
 * Folds envelopes (in partition-log order) onto a state; returns a new state, `start` is not changed.
 * The projector folds each batch from empty buckets and the batch's tasks' stored memory, so the result's
 * buckets are the batch's increments and its `open` the memory to store (absent: forget).
 */
export const foldEnvelopes = (
  options: MetricsOptions,
  envelopes: Iterable<LogFacts>,
  start: MetricsState = emptyState
): MetricsState => {
  const buckets = new Map<string, Record<string, number>>()
  for (const [id, b] of start.buckets) buckets.set(id, { ...b })
  const open = new Map(start.open)

  const bucketOf = (agent: string, start: number): Record<string, number> => {
    const id = bucketId(agent, start)
    let b = buckets.get(id)
    if (b === undefined) {
      b = {}
      buckets.set(id, b)
    }
    return b
  }
  // The agent's and the all-agents bucket of the last event: consecutive events nearly always share them, and
  // an event adds up to 7 fields to both (the projector folds every partition-log entry).
  let lastAgent: string | undefined
  let lastStart = 0
  let own: Record<string, number> = {}
  let all: Record<string, number> = {}
  const add = (agent: string, at: number, field: string, n: number) => {
    const s = bucketStart(options.bucketSeconds, at)
    if (agent !== lastAgent || s !== lastStart) {
      own = bucketOf(agent, s)
      all = bucketOf(ALL_AGENTS, s)
      lastAgent = agent
      lastStart = s
    }
    own[field] = (own[field] ?? 0) + n
    all[field] = (all[field] ?? 0) + n
  }
  const count = (agent: string, at: number, counter: CounterName) => add(agent, at, counter, 1)
  const sample = (agent: string, at: number, name: LatencyName, ms: number) => {
    add(agent, at, `${name}.n`, 1)
    add(agent, at, `${name}.ms`, ms)
    add(agent, at, `${name}.h${histogramBin(ms)}`, 1)
  }
  const remember = (taskId: string, t: OpenTask) => {
    if (t.queuedAt === undefined && t.claimedAt === undefined) open.delete(taskId)
    else open.set(taskId, t)
  }
  /** The attempt in progress ended at `at`: one run-time sample, if its claim was seen. */
  const endRun = (agent: string, at: number, t: OpenTask | undefined) => {
    if (t?.claimedAt !== undefined) sample(agent, at, "run", duration(t.claimedAt, at))
  }

  for (const { at, taskId, agent, event } of envelopes) {
    const t = open.get(taskId)
    const e: Event = event
    switch (e._tag) {
      case "TaskEnqueued":
        count(agent, at, "enqueued")
        remember(taskId, { queuedAt: at })
        break
      case "TaskClaimed":
        count(agent, at, "started")
        if (t?.queuedAt !== undefined) sample(agent, at, "wait", duration(t.queuedAt, at))
        remember(taskId, { claimedAt: at })
        break
      case "TurnCompleted":
        count(agent, at, "turns")
        endRun(agent, at, t)
        remember(taskId, { queuedAt: at })
        break
      case "TaskCompleted":
        count(agent, at, "completed")
        endRun(agent, at, t)
        open.delete(taskId)
        break
      case "TaskFailed":
        endRun(agent, at, t)
        if (e.decision === "failed") {
          count(agent, at, "failed")
          open.delete(taskId)
        } else {
          count(agent, at, "retried")
          // A retry waits in the queue from now; a backoff starts waiting when it elapses.
          remember(taskId, e.decision === "retry" ? { queuedAt: at } : {})
        }
        break
      case "TaskCancelled":
        count(agent, at, "cancelled")
        // A cancel that interrupted an attempt (it names the lease) ends that attempt's run.
        if (e.lease !== undefined) endRun(agent, at, t)
        open.delete(taskId)
        break
      case "TaskReleased":
        // Handed back untouched (graceful shutdown): the attempt ran until now; the task waits again.
        endRun(agent, at, t)
        remember(taskId, { queuedAt: at })
        break
      case "TaskRecovered":
        // The worker was lost: when its attempt really ended is unknown, so no run-time sample.
        count(agent, at, "recovered")
        if (e.decision === "failed") {
          count(agent, at, "failed")
          open.delete(taskId)
        } else {
          remember(taskId, { queuedAt: at })
        }
        break
      case "TaskBackoffElapsed":
        remember(taskId, { queuedAt: at })
        break
      case "TaskExpired":
        count(agent, at, "expired")
        open.delete(taskId)
        break
      case "TaskWaiting":
        // The turn ended (like TurnCompleted); the task waits in the queue only once it resumes.
        count(agent, at, "turns")
        endRun(agent, at, t)
        remember(taskId, e.resumed ? { queuedAt: at } : {})
        break
      case "ToolResultReceived":
      case "ChildTaskFinished":
        if (e.resumed) remember(taskId, { queuedAt: at })
        break
      case "TaskWaitTimedOut":
        if (e.decision === "failed") {
          count(agent, at, "failed")
          open.delete(taskId)
        } else if (e.decision === "resumed") {
          remember(taskId, { queuedAt: at })
        }
        break
      case "TaskHeartbeat":
      case "TaskSteered":
      case "TaskCancelRequested":
      case "ChildTasksSpawned":
        // Deliberately ignored: heartbeats are liveness (the gauges read workers from the queues), steering
        // and cancel requests change no counter and start or end no wait or run.
        break
      default:
        e._tag satisfies never
    }
  }
  return { buckets, open }
}

/** The whole log at once. */
export const fold = (options: MetricsOptions, envelopes: Iterable<Envelope>): MetricsState =>
  foldEnvelopes(options, envelopes)

/**
 * The projection in the shape of `Projection<S>` (STYLE §6.4): name, version, initial state and a pure
 * `evolve`. `evolve` copies the state per event; the projector folds whole batches with `foldEnvelopes`.
 */
export const metricsProjection = (options: MetricsOptions) => ({
  name: "metrics",
  version: 1,
  initialState: emptyState,
  evolve: (state: MetricsState, envelope: Envelope): MetricsState => foldEnvelopes(options, [envelope], state)
})

// ---------------------------------------------------------------------------------------------------------
// Reading a bucket

export interface LatencySummary {
  readonly count: number
  readonly totalMs: number
  readonly avgMs: number | null
  readonly p50Ms: number | null
  readonly p95Ms: number | null
  readonly p99Ms: number | null
}

/** One bucket of the timeline with its derived figures. */
export interface TimelinePoint {
  readonly agent: string
  /** Bucket start and end, ms since the epoch. */
  readonly start: number
  readonly end: number
  readonly counters: Readonly<Record<CounterName, number>>
  /** Tasks completed per second over the bucket. */
  readonly throughputPerSecond: number
  /** completed / (completed + failed); null when nothing finished either way. */
  readonly successRate: number | null
  readonly wait: LatencySummary
  readonly run: LatencySummary
}

const orNull = (x: number | undefined): number | null => x === undefined ? null : x

export const summarizeLatency = (bucket: Bucket, name: LatencyName): LatencySummary => {
  const count = bucket[`${name}.n`] ?? 0
  const totalMs = bucket[`${name}.ms`] ?? 0
  const bins = latencyBins(bucket, name)
  return {
    count,
    totalMs,
    avgMs: count === 0 ? null : totalMs / count,
    p50Ms: orNull(estimateQuantile(bins, 0.5)),
    p95Ms: orNull(estimateQuantile(bins, 0.95)),
    p99Ms: orNull(estimateQuantile(bins, 0.99))
  }
}

/** The derived view of a bucket. */
export const toTimelinePoint = (
  bucketSeconds: number,
  agent: string,
  startSeconds: number,
  bucket: Bucket
): TimelinePoint => {
  const counters = Object.fromEntries(counterNames.map((c) => [c, bucket[c] ?? 0])) as Record<CounterName, number>
  const finished = counters.completed + counters.failed
  return {
    agent,
    start: startSeconds * 1000,
    end: (startSeconds + bucketSeconds) * 1000,
    counters,
    throughputPerSecond: counters.completed / bucketSeconds,
    successRate: finished === 0 ? null : counters.completed / finished,
    wait: summarizeLatency(bucket, "wait"),
    run: summarizeLatency(bucket, "run")
  }
}
