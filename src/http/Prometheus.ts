/**
 * `GET /metrics`: the gauges and the metrics projection in the Prometheus text format (version 0.0.4).
 *
 * Gauges are read as they are now. Counters must never go down, but the projection's buckets expire after
 * their retention, so a counter cannot be "the sum of the buckets". Instead this server keeps, per agent,
 * the sum of the buckets it has *settled* (buckets that ended more than `settleSeconds` ago, folded in once
 * and never read again) and adds the buckets since then, read afresh at each scrape. So the counters are
 * monotonic within one server process and start at the bucket the server started in (a restart is a
 * counter reset, which Prometheus handles). `settleSeconds` is at most half the retention, so a bucket is
 * settled long before it expires; increments the projector commits more than `settleSeconds` late (a
 * projector that lagged that far) are not counted.
 *
 * The latency summaries give p50/p95/p99 over the last 5 minutes, with `_sum`/`_count` as counters.
 */
import { Clock, Effect } from "effect"
import type { FastifyPluginAsync } from "fastify"
import { Gauges } from "../../projections/Gauges.ts"
import {
  addBuckets,
  type Bucket,
  bucketStart,
  counterNames,
  type CounterName,
  latencyBins,
  estimateQuantile,
  latencyNames
} from "../../projections/MetricsBuckets.ts"
import { MAX_TIMELINE_BUCKETS, MetricsProjector } from "../../projections/Projector.ts"
import type { AppOptions } from "./App.ts"
import { sendError } from "./HttpError.ts"
import { LIVE_WITHIN_MS } from "./ObservabilityRoutes.ts"

/** How long the latency quantiles look back, in seconds. */
const QUANTILE_WINDOW_SECONDS = 300
const QUANTILES = [0.5, 0.95, 0.99] as const

const counterHelp: Readonly<Record<CounterName, [string, string]>> = {
  enqueued: ["factorial_tasks_enqueued_total", "Tasks enqueued."],
  started: ["factorial_task_attempts_total", "Attempts started (claims: one per turn picked up)."],
  completed: ["factorial_tasks_completed_total", "Tasks completed."],
  failed: ["factorial_tasks_failed_total", "Tasks failed for good (fatal error or retries exhausted)."],
  cancelled: ["factorial_tasks_cancelled_total", "Tasks cancelled."],
  retried: ["factorial_task_retries_total", "Failed attempts that were retried (at once or after a backoff)."],
  recovered: ["factorial_task_recoveries_total", "Leases revoked by maintenance after a worker stopped heartbeating."],
  expired: ["factorial_tasks_expired_total", "Finished tasks whose data expired."],
  turns: ["factorial_turns_total", "Non-final turns completed."]
}

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")
const labels = (l: Record<string, string>) =>
  `{${Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`
const num = (n: number) => Number.isFinite(n) ? String(n) : n > 0 ? "+Inf" : n < 0 ? "-Inf" : "NaN"

/** A metric family: HELP, TYPE and its samples. */
const family = (name: string, type: string, help: string, samples: ReadonlyArray<string>) =>
  [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples].join("\n")

export const prometheusRoute = (options: AppOptions): FastifyPluginAsync => async (app) => {
  /** Buckets with a start before this (seconds) are in `settled`; undefined until the first scrape. */
  let settledBefore: number | undefined
  const settled = new Map<string, Bucket>()
  /** Scrapes run one at a time (each settles what the previous one left). */
  let queue: Promise<unknown> = Promise.resolve()
  const startedAt = Date.now()

  const scrape = Effect.gen(function*() {
    const gauges = yield* Gauges
    const projector = yield* MetricsProjector
    const { bucketSeconds, retentionSeconds } = projector.options
    const now = yield* Clock.currentTimeMillis
    const snapshot = yield* gauges.read({ liveWithinMs: options.liveWithinMs ?? LIVE_WITHIN_MS })
    const projection = yield* projector.status
    const agents = [...new Set([...snapshot.queues.map((q) => q.agent), ...options.agents().map((a) => a.name)])]
      .sort()

    const settleSeconds = Math.max(1, Math.min(300, retentionSeconds > 0 ? Math.floor(retentionSeconds / 2) : 300))
    const current = bucketStart(bucketSeconds, now)
    // Never read more than one query's worth of buckets (after a long pause, older ones are skipped).
    const earliest = current - (MAX_TIMELINE_BUCKETS - 1) * bucketSeconds
    const from = Math.max(settledBefore ?? bucketStart(bucketSeconds, startedAt), earliest)
    const settleBefore = Math.max(from, Math.min(current, bucketStart(bucketSeconds, now - settleSeconds * 1000)))
    const quantileFrom = bucketStart(bucketSeconds, now - QUANTILE_WINDOW_SECONDS * 1000)

    const perAgent = yield* Effect.forEach(agents, (agent) =>
      Effect.map(projector.readBuckets({ agent, from: from * 1000, to: now + 1 }), (buckets) => {
        let settledSum = settled.get(agent) ?? {}
        let open: Bucket = {}
        let recent: Bucket = {}
        for (const b of buckets) {
          if (b.start < settleBefore) settledSum = addBuckets(settledSum, b.bucket)
          else open = addBuckets(open, b.bucket)
          if (b.start >= quantileFrom) recent = addBuckets(recent, b.bucket)
        }
        return { agent, settledSum, total: addBuckets(settledSum, open), recent }
      }), { concurrency: 4 })
    // Commit the settling only once every read succeeded.
    for (const a of perAgent) settled.set(a.agent, a.settledSum)
    settledBefore = settleBefore

    const out: Array<string> = []
    out.push(family(
      "factorial_tasks",
      "gauge",
      "Tasks per status now (from the status indexes; expired tasks are not indexed).",
      Object.entries(snapshot.tasksByStatus).map(([status, n]) => `factorial_tasks${labels({ status })} ${n}`)
    ))
    const queueGauge = (name: string, help: string, value: (q: typeof snapshot.queues[number]) => number) =>
      out.push(family(name, "gauge", help, snapshot.queues.map((q) => `${name}${labels({ agent: q.agent })} ${num(value(q))}`)))
    queueGauge("factorial_queue_waiting_tasks", "Queue entries not yet delivered to a worker.", (q) => q.waiting)
    queueGauge("factorial_queue_in_flight_tasks", "Queue entries delivered and not yet finished.", (q) => q.inFlight)
    queueGauge(
      "factorial_queue_oldest_waiting_age_seconds",
      "Age of the oldest waiting queue entry (0 when none waits).",
      (q) => (q.oldestWaitingAgeMs ?? 0) / 1000
    )
    queueGauge(
      "factorial_live_workers",
      `Live workers of the agent: registered as alive in {ns}:consumers (a consumer with no registration: idle at most ${(options.liveWithinMs ?? LIVE_WITHIN_MS) / 1000} s).`,
      (q) => q.liveWorkers.length
    )
    out.push(family("factorial_live_workers_distinct", "gauge", "Distinct live workers over all agents.", [
      `factorial_live_workers_distinct ${snapshot.liveWorkers}`
    ]))
    out.push(family(
      "factorial_metrics_projectors",
      "gauge",
      "Processes keeping the metrics timeline current ({ns}:projectors; 0: nobody projects).",
      [`factorial_metrics_projectors ${projection.liveProjectors}`]
    ))
    out.push(family(
      "factorial_metrics_unprojected_age_seconds",
      "gauge",
      "Age of the oldest event-log entry the metrics do not count yet (0 when they count every entry); it grows while nobody projects.",
      [`factorial_metrics_unprojected_age_seconds ${num((projection.oldestUnprojectedAgeMs ?? 0) / 1000)}`]
    ))
    for (const c of counterNames) {
      const [name, help] = counterHelp[c]
      out.push(family(name, "counter", help, perAgent.map((a) => `${name}${labels({ agent: a.agent })} ${a.total[c] ?? 0}`)))
    }
    for (const l of latencyNames) {
      const name = `factorial_task_${l}_seconds`
      const help = l === "wait"
        ? `Time tasks waited in the queue before a claim; quantiles over the last ${QUANTILE_WINDOW_SECONDS} s.`
        : `Time attempts ran (claim to end of turn); quantiles over the last ${QUANTILE_WINDOW_SECONDS} s.`
      const samples = perAgent.flatMap((a) => {
        const bins = latencyBins(a.recent, l)
        return [
          ...QUANTILES.map((q) => {
            const v = estimateQuantile(bins, q)
            return `${name}${labels({ agent: a.agent, quantile: String(q) })} ${v === undefined ? "NaN" : num(v / 1000)}`
          }),
          `${name}_sum${labels({ agent: a.agent })} ${num((a.total[`${l}.ms`] ?? 0) / 1000)}`,
          `${name}_count${labels({ agent: a.agent })} ${a.total[`${l}.n`] ?? 0}`
        ]
      })
      out.push(family(name, "summary", help, samples))
    }
    return out.join("\n") + "\n"
  })

  app.get("/metrics", async (_request, reply) => {
    const result = queue.then(() => options.run(scrape))
    queue = result.catch(() => undefined)
    const exit = await result
    if (exit._tag === "Failure") {
      return sendError(reply, exit.cause.reasons.find((r) => r._tag === "Fail")?.error ?? exit.cause)
    }
    return reply.header("content-type", "text/plain; version=0.0.4; charset=utf-8").send(exit.value)
  })
}
