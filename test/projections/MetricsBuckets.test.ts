/**
 * The pure metrics fold: chunking invariance (the property the projector's HINCRBY merge relies on),
 * evolve = fold, exact counters and latencies for a known history, bounded per-task memory, and the
 * histogram's percentile estimates.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import {
  ALL_AGENTS,
  binBounds,
  bucketId,
  emptyState,
  estimateQuantile,
  fold,
  foldEnvelopes,
  histogramBin,
  type MetricsState,
  mergeBucketMaps,
  metricsOptionsFromTimeline,
  metricsProjection,
  toTimelinePoint
} from "../../projections/MetricsBuckets.ts"
import type { Envelope, TaskEvent } from "../../streams/TaskEvent.ts"
import { BASE_AT, canon, chunk, logArb } from "./fixtures.ts"

const options = { bucketSeconds: 60, retentionSeconds: 3600 }

/** What the projector does: fold each chunk from empty buckets and the carried memory, add the chunks. */
const foldChunked = (chunks: ReadonlyArray<ReadonlyArray<Envelope>>): MetricsState => {
  let buckets: MetricsState["buckets"] = new Map()
  let open: MetricsState["open"] = new Map()
  for (const c of chunks) {
    const delta = foldEnvelopes(options, c, { buckets: new Map(), open })
    buckets = mergeBucketMaps(buckets, delta.buckets)
    open = delta.open
  }
  return { buckets, open }
}

describe("MetricsBuckets fold", () => {
  it("any chunking of a log, merged by addition, equals one fold", () => {
    fc.assert(
      fc.property(logArb(80), fc.array(fc.nat(200), { maxLength: 12 }), (log, cuts) => {
        assert.deepStrictEqual(canon(foldChunked(chunk(log, cuts))), canon(fold(options, log)))
      }),
      { numRuns: 300 }
    )
  })

  it("evolve event by event equals the batch fold", () => {
    const projection = metricsProjection(options)
    fc.assert(
      fc.property(logArb(40), (log) => {
        const stepped = log.reduce(projection.evolve, projection.initialState)
        assert.deepStrictEqual(canon(stepped), canon(fold(options, log)))
      }),
      { numRuns: 100 }
    )
  })

  it("remembers only unfinished tasks", () => {
    fc.assert(
      fc.property(logArb(80), (log) => {
        const state = fold(options, log)
        const terminal = new Set(["TaskCompleted", "TaskCancelled", "TaskExpired"])
        for (const [taskId] of state.open) {
          const last = log.filter((e) => e.taskId === taskId && e.event._tag !== "TaskHeartbeat").at(-1)!
          const ended = terminal.has(last.event._tag) ||
            (last.event._tag === "TaskFailed" && last.event.decision === "failed") ||
            (last.event._tag === "TaskRecovered" && last.event.decision === "failed")
          assert.isFalse(ended, `${taskId} is remembered after ${last.event._tag}`)
        }
      }),
      { numRuns: 200 }
    )
  })

  it("counts a known history exactly", () => {
    const t0 = BASE_AT - (BASE_AT % 60_000) // a bucket boundary
    let n = 0
    const ev = (at: number, taskId: string, agent: string, event: TaskEvent): Envelope => ({
      id: `${at}-${n++}`,
      version: n,
      at,
      taskId,
      agent,
      ownerId: "o",
      event
    })
    const log: Array<Envelope> = [
      ev(t0, "t1", "alpha", { _tag: "TaskEnqueued", payload: null, maxRetries: 1 }),
      ev(t0 + 1_000, "t1", "alpha", { _tag: "TaskClaimed", lease: 1, worker: "w" }),
      ev(t0 + 2_000, "t1", "alpha", { _tag: "TaskHeartbeat", lease: 1, worker: "w" }),
      ev(t0 + 3_000, "t1", "alpha", { _tag: "TurnCompleted", lease: 1, turn: 1, payload: null, steeringApplied: 0 }),
      ev(t0 + 3_500, "t1", "alpha", { _tag: "TaskClaimed", lease: 2, worker: "w" }),
      ev(t0 + 6_000, "t1", "alpha", {
        _tag: "TaskFailed",
        lease: 2,
        error: { message: "x", kind: "timeout" },
        decision: "retry",
        retries: 1
      }),
      ev(t0 + 6_000, "t2", "beta", { _tag: "TaskEnqueued", payload: null, maxRetries: 0 }),
      ev(t0 + 66_000, "t1", "alpha", { _tag: "TaskClaimed", lease: 3, worker: "w" }), // next bucket, waited 60 s
      ev(t0 + 70_000, "t1", "alpha", {
        _tag: "TaskCompleted",
        lease: 3,
        output: 1,
        steeringApplied: 0,
        steeringUnapplied: 0
      }),
      ev(t0 + 71_000, "t2", "beta", { _tag: "TaskClaimed", lease: 1, worker: "w" }),
      ev(t0 + 72_000, "t2", "beta", { _tag: "TaskRecovered", lease: 1, decision: "failed", retries: 0 }),
      ev(t0 + 73_000, "t3", "beta", { _tag: "TaskEnqueued", payload: null, maxRetries: 0 }),
      ev(t0 + 74_000, "t3", "beta", { _tag: "TaskCancelled" })
    ]
    const state = fold(options, log)
    const s0 = t0 / 1000
    const s1 = s0 + 60
    assert.deepStrictEqual(state.buckets.get(bucketId("alpha", s0)), {
      enqueued: 1,
      started: 2,
      turns: 1,
      retried: 1,
      "wait.n": 2,
      "wait.ms": 1_500,
      [`wait.h${histogramBin(1_000)}`]: 1,
      [`wait.h${histogramBin(500)}`]: 1,
      "run.n": 2,
      "run.ms": 4_500,
      [`run.h${histogramBin(2_000)}`]: 1,
      [`run.h${histogramBin(2_500)}`]: 1
    })
    assert.deepStrictEqual(state.buckets.get(bucketId("alpha", s1)), {
      started: 1,
      completed: 1,
      "wait.n": 1,
      "wait.ms": 60_000,
      [`wait.h${histogramBin(60_000)}`]: 1,
      "run.n": 1,
      "run.ms": 4_000,
      [`run.h${histogramBin(4_000)}`]: 1
    })
    // A recovered attempt has no known end: no run sample, but it counts as recovered and failed.
    assert.deepStrictEqual(state.buckets.get(bucketId("beta", s1)), {
      enqueued: 1,
      started: 1,
      recovered: 1,
      failed: 1,
      cancelled: 1,
      "wait.n": 1,
      "wait.ms": 65_000,
      [`wait.h${histogramBin(65_000)}`]: 1
    })
    assert.deepStrictEqual(state.buckets.get(bucketId("beta", s0)), { enqueued: 1 })
    const all1 = state.buckets.get(bucketId(ALL_AGENTS, s1))!
    assert.strictEqual(all1.started, 2)
    assert.strictEqual(all1["wait.ms"], 125_000)
    assert.strictEqual(state.open.size, 0)

    const point = toTimelinePoint(60, "alpha", s0, state.buckets.get(bucketId("alpha", s0))!)
    assert.strictEqual(point.start, t0)
    assert.strictEqual(point.successRate, null)
    assert.strictEqual(point.wait.avgMs, 750)
    const point1 = toTimelinePoint(60, ALL_AGENTS, s1, all1)
    assert.strictEqual(point1.successRate, 0.5)
    assert.strictEqual(point1.throughputPerSecond, 1 / 60)
  })

  it("takes bucket width and retention from the timeline settings", () => {
    assert.deepStrictEqual(
      metricsOptionsFromTimeline({ timelineDuration: 3600, bucketSize: "minutes", retentionMultiplier: 2 }),
      { bucketSeconds: 60, retentionSeconds: 7200 }
    )
    assert.deepStrictEqual(canon(fold(options, [])), canon(emptyState))
  })
})

describe("latency histogram", () => {
  const durationArb = fc.oneof(
    fc.nat(10),
    fc.double({ min: 0, max: 7, noNaN: true }).map((e) => Math.round(10 ** e))
  )

  it("a percentile estimate lies in the bin of the true percentile", () => {
    fc.assert(
      fc.property(fc.array(durationArb, { minLength: 1, maxLength: 400 }), (samples) => {
        const bins = new Map<number, number>()
        for (const s of samples) bins.set(histogramBin(s), (bins.get(histogramBin(s)) ?? 0) + 1)
        const sorted = [...samples].sort((a, b) => a - b)
        let previous = 0
        for (const q of [0.5, 0.95, 0.99]) {
          const exact = sorted[Math.ceil(q * sorted.length) - 1]!
          const estimate = estimateQuantile(bins, q)!
          const [lo, hi] = binBounds(histogramBin(exact))
          assert.isTrue(
            estimate >= (histogramBin(exact) === 0 ? 0 : lo) && estimate <= hi,
            `q=${q}: ${estimate} not in [${lo}, ${hi}] of ${exact}`
          )
          assert.isTrue(estimate >= previous, "percentiles are monotone")
          previous = estimate
        }
      }),
      { numRuns: 300 }
    )
  })

  it("is within 19 % on a known distribution", () => {
    // 1..10000 ms, uniform: p50 = 5000, p95 = 9500, p99 = 9900.
    const bins = new Map<number, number>()
    for (let ms = 1; ms <= 10_000; ms++) bins.set(histogramBin(ms), (bins.get(histogramBin(ms)) ?? 0) + 1)
    for (const [q, exact] of [[0.5, 5_000], [0.95, 9_500], [0.99, 9_900]] as const) {
      const estimate = estimateQuantile(bins, q)!
      assert.isTrue(Math.abs(estimate / exact - 1) < 0.19, `p${q * 100} ≈ ${estimate}, exact ${exact}`)
    }
    assert.strictEqual(estimateQuantile(new Map(), 0.5), undefined)
    assert.strictEqual(estimateQuantile(new Map([[0, 3]]), 0.99), 0)
  })

  it("bins are contiguous and ordered", () => {
    for (let bin = 1; bin < 120; bin++) {
      const [lo, hi] = binBounds(bin)
      assert.strictEqual(binBounds(bin + 1)[0], hi)
      assert.isTrue(lo < hi)
    }
    fc.assert(
      fc.property(fc.double({ min: 1, max: 1e12, noNaN: true }), (ms) => {
        const [lo, hi] = binBounds(histogramBin(ms))
        // Floating point: log2 may put a value at a bin edge in the neighbouring bin by an ulp.
        assert.isTrue(ms >= lo * (1 - 1e-12) && ms <= hi * (1 + 1e-12))
      })
    )
  })
})
