/**
 * The dashboard's JSON API (`/observability/api/…`), answered from projections only — the gauges (status
 * indexes, queue streams and their consumer groups), the metrics buckets, the status indexes paged, and one
 * task's hash and history — never from a scan of all tasks. Each request does bounded work: the buckets of
 * one window, `limit` index entries and hashes, or one task. A window's buckets are read at most once per
 * 1/1440 of the window per server and shared meanwhile (`WINDOW_READS_PER_WINDOW`): what open pages cost Redis
 * does not grow with the window. Routes and response shapes: docs/observability.md.
 */
import { Cache, Clock, Effect, Exit, Schema } from "effect"
import type { FastifyPluginAsync } from "fastify"
import {
  DEFAULT_LIVE_WITHIN_MS,
  type GaugeSnapshot,
  Gauges,
  indexedStatuses,
  type QueueGauge
} from "../../projections/Gauges.ts"
import { ALL_AGENTS } from "../../projections/MetricsBuckets.ts"
import { MetricsProjector, type ProjectionStatus } from "../../projections/Projector.ts"
import { fold } from "../../projections/TaskDecider.ts"
import { parseTaskCursor, readTaskPage } from "../../projections/TaskIndex.ts"
import {
  mergePoints,
  type WindowName,
  windowNames,
  windowRange,
  windowSeconds,
  windowTotals
} from "../../projections/TimelineWindow.ts"
import { taskKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { AgentName, TaskId } from "../../streams/TaskEvent.ts"
import { InvalidInput, TaskNotFound } from "../Errors.ts"
import { validTaskId } from "../TaskClient.ts"
import { TaskStore } from "../TaskStore.ts"
import type { AppOptions } from "./App.ts"
import { decoder, responder } from "./Respond.ts"

/** The most history entries one task answer holds (the newest ones when the history is longer). */
export const MAX_HISTORY = 5_000
/**
 * A queue consumer with no registration in `{ns}:consumers` (a process of an older version) counts as a
 * live worker if it is idle for at most this long; registered ones are live while their registration holds.
 */
export const LIVE_WITHIN_MS = DEFAULT_LIVE_WITHIN_MS

const Window = Schema.Literals(windowNames)
const WindowQuery = Schema.Struct({ window: Schema.optionalKey(Window) })
const TimelineQuery = Schema.Struct({ window: Schema.optionalKey(Window), agent: Schema.optionalKey(AgentName) })
const Limit = Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 200 }))
const TasksQuery = Schema.Struct({
  status: Schema.optionalKey(Schema.String),
  agent: Schema.optionalKey(AgentName),
  owner: Schema.optionalKey(Schema.String),
  cursor: Schema.optionalKey(Schema.String),
  limit: Schema.optionalKey(Limit)
})

const decodeWindowQuery = decoder(WindowQuery, "query")
const decodeTimelineQuery = decoder(TimelineQuery, "timeline query")
const decodeTasksQuery = decoder(TasksQuery, "tasks query")

const DEFAULT_WINDOW: WindowName = "1h"

/** A queue's gauge as the API shows it: workers counted, and the "nobody will pick these up" warning. */
const queueView = (q: QueueGauge) => ({
  agent: q.agent,
  waiting: q.waiting,
  inFlight: q.inFlight,
  oldestWaitingAt: q.oldestWaitingAt,
  oldestWaitingAgeMs: q.oldestWaitingAgeMs,
  liveWorkers: q.liveWorkers.length,
  noLiveWorkers: q.waiting > 0 && q.liveWorkers.length === 0
})

const warningsOf = (snapshot: GaugeSnapshot) =>
  snapshot.queues.filter((q) => q.waiting > 0 && q.liveWorkers.length === 0).map((q) => ({
    agent: q.agent,
    waiting: q.waiting,
    message: `${q.waiting} task(s) of ${q.agent} are waiting and no worker of ${q.agent} is live`
  }))

/** The metrics count no entry older than this (ms) for longer than this: the projection is stalled. */
export const PROJECTION_STALLED_AFTER_MS = 60_000

/** The projection's gauges as the API shows them, with the "the timeline is stale" verdict. */
const projectionView = (status: ProjectionStatus) => ({
  liveProjectors: status.liveProjectors,
  oldestUnprojectedAgeMs: status.oldestUnprojectedAgeMs,
  stalled: (status.oldestUnprojectedAgeMs ?? 0) > PROJECTION_STALLED_AFTER_MS
})

/** The stored buckets of a window for one agent (or all), with the range they cover. */
const readWindow = (window: WindowName, agent: string | undefined) =>
  Effect.gen(function*() {
    const projector = yield* MetricsProjector
    const now = yield* Clock.currentTimeMillis
    const range = windowRange(window, projector.options.bucketSeconds, now)
    const buckets = yield* projector.readBuckets({ agent, from: range.from, to: range.to })
    return { range, buckets, bucketSeconds: projector.options.bucketSeconds }
  })

/**
 * A server reads a window's buckets at most once per this fraction of the window (2.5 s for 1h, 60 s for 24h)
 * and answers every request meanwhile from that read. Reading costs Redis one HGETALL per bucket, agent and
 * partition (122 per partition for 24h of minutes within the default 2h retention), and an open page asks for its window about three times a
 * second while events stream in; a 24h sum read a minute ago differs from a fresh one by that minute.
 */
export const WINDOW_READS_PER_WINDOW = 1_440

export const observabilityRoutes = (options: AppOptions): FastifyPluginAsync => async (app) => {
  const respond = responder(options.run)
  // One cache per window, keyed by agent ("" for all agents); a failed read is not kept.
  const windowCache = (window: WindowName) =>
    Effect.runSync(Cache.makeWith((agent: string) => readWindow(window, agent === "" ? undefined : agent), {
      capacity: 256,
      timeToLive: (exit) => Exit.isSuccess(exit) ? windowSeconds[window] * 1000 / WINDOW_READS_PER_WINDOW : 0,
      requireServicesAt: "lookup"
    }))
  const windows = new Map(windowNames.map((window) => [window, windowCache(window)]))
  /** The window's buckets, read at most once per 1/1440 of the window by this server. */
  const cachedWindow = (window: WindowName, agent: string | undefined) => Cache.get(windows.get(window)!, agent ?? "")
  const totalsOf = (window: WindowName, agent: string | undefined) =>
    Effect.map(
      cachedWindow(window, agent),
      ({ range, buckets }) => windowTotals(agent ?? ALL_AGENTS, (range.to - range.from) / 1000, buckets)
    )
  const liveWithinMs = options.liveWithinMs ?? LIVE_WITHIN_MS
  // The gauges are read at most once per `gaugesReadEveryMs` (1 s by default) and shared by the requests
  // meanwhile: one read costs Redis a few commands per status, agent and partition (~230 with 8 partitions and
  // 3 agents), and an open page asks for them from three endpoints at once, up to twice a second while events
  // stream in (ADR 0024). One entry (the namespace's gauges); a failed read is not kept.
  const gaugesEveryMs = options.config.gaugesReadEveryMs
  const gauges = Effect.runSync(Cache.makeWith((_: "gauges") => Gauges.use((g) => g.read({ liveWithinMs })), {
    capacity: 1,
    timeToLive: (exit) => Exit.isSuccess(exit) ? gaugesEveryMs : 0,
    requireServicesAt: "lookup"
  }))
  const readGauges = Cache.get(gauges, "gauges")

  app.get("/overview", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const { window = DEFAULT_WINDOW } = yield* decodeWindowQuery(request.query)
        const snapshot = yield* readGauges
        const totals = yield* totalsOf(window, undefined)
        const projection = yield* MetricsProjector.use((p) => p.status)
        return {
          at: snapshot.at,
          window,
          tasksByStatus: snapshot.tasksByStatus,
          liveWorkers: snapshot.liveWorkers,
          queues: snapshot.queues.map(queueView),
          warnings: warningsOf(snapshot),
          metricsProjection: projectionView(projection),
          totals
        }
      })
    ))

  app.get("/timeline", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const { window = DEFAULT_WINDOW, agent } = yield* decodeTimelineQuery(request.query)
        const { range, buckets, bucketSeconds } = yield* cachedWindow(window, agent)
        return {
          window,
          agent: agent ?? null,
          from: range.from,
          to: range.to,
          bucketSeconds,
          pointSeconds: range.pointSeconds,
          points: mergePoints(agent ?? ALL_AGENTS, bucketSeconds, range.step, buckets)
        }
      })
    ))

  app.get("/agents", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const { window = DEFAULT_WINDOW } = yield* decodeWindowQuery(request.query)
        const snapshot = yield* readGauges
        const registered = new Set(options.agents().map((a) => a.name))
        const names = [...new Set([...snapshot.queues.map((q) => q.agent), ...registered])].sort()
        const agents = yield* Effect.forEach(names, (agent) =>
          Effect.map(totalsOf(window, agent), (totals) => {
            const q = snapshot.queues.find((x) => x.agent === agent)
            return {
              ...queueView(q ?? {
                agent,
                waiting: 0,
                inFlight: 0,
                oldestWaitingAt: null,
                oldestWaitingAgeMs: null,
                workers: [],
                liveWorkers: []
              }),
              registeredHere: registered.has(agent),
              totals
            }
          }), { concurrency: 4 })
        return { at: snapshot.at, window, agents }
      })
    ))

  app.get("/queues", (_request, reply) =>
    respond(
      reply,
      Effect.map(readGauges, (snapshot) => ({
        at: snapshot.at,
        queues: snapshot.queues.map(queueView),
        warnings: warningsOf(snapshot)
      }))
    ))

  app.get("/workers", (_request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        // Every worker consumer of every queue group; "live" as the gauges judge it (registration, else idle).
        const snapshot = yield* readGauges
        const byName = new Map<string, Array<{ agent: string; idleMs: number; pending: number; live: boolean }>>()
        for (const q of snapshot.queues) {
          for (const w of q.workers) {
            byName.set(w.name, [...(byName.get(w.name) ?? []), { agent: q.agent, idleMs: w.idleMs, pending: w.pending, live: w.live }])
          }
        }
        const workers = [...byName].map(([name, agents]) => ({
          name,
          live: agents.some((a) => a.live),
          idleMs: Math.min(...agents.map((a) => a.idleMs)),
          pending: agents.reduce((n, a) => n + a.pending, 0),
          agents: agents.map(({ agent, idleMs, pending }) => ({ agent, idleMs, pending }))
        })).sort((a, b) => Number(b.live) - Number(a.live) || a.idleMs - b.idleMs || (a.name < b.name ? -1 : 1))
        return { at: snapshot.at, liveWithinMs, workers }
      })
    ))

  app.get("/tasks", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const q = yield* decodeTasksQuery(request.query)
        const status = indexedStatuses.find((s) => s === q.status)
        if (status === undefined) {
          return yield* new InvalidInput({
            message: q.status === undefined
              ? `status is required: one of ${indexedStatuses.join(", ")}`
              : `unknown status ${JSON.stringify(q.status)}: one of ${indexedStatuses.join(", ")}`
          })
        }
        const cursor = q.cursor === undefined || q.cursor === "" ? undefined : parseTaskCursor(q.cursor)
        if (q.cursor !== undefined && q.cursor !== "" && (cursor === undefined || !Schema.is(TaskId)(cursor.id))) {
          return yield* new InvalidInput({
            message: `invalid cursor ${JSON.stringify(q.cursor)}: pass back a nextCursor (<ms>:<task id>)`
          })
        }
        const store = yield* TaskStore
        const limit = q.limit ?? 50
        const page = yield* readTaskPage(store.keyspace, {
          status,
          limit,
          cursor,
          agent: q.agent,
          ownerId: q.owner
        })
        return {
          status,
          limit,
          filter: { agent: q.agent ?? null, owner: q.owner ?? null },
          ...page
        }
      })
    ))

  app.get<{ Params: { id: string } }>("/tasks/:id", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const id = yield* validTaskId(request.params.id)
        const store = yield* TaskStore
        const redis = yield* RedisClient
        const task = yield* store.getTask(id)
        const length = yield* redis.use("history length", (c) => c.llen(taskKeys(store.keyspace, id).log))
        if (task === undefined && length === 0) return yield* new TaskNotFound({ taskId: id })
        const start = Math.max(0, length - MAX_HISTORY)
        // A task whose data expired has no payload left but its history: the one its last checkpoint left is folded
        // from the whole history (checkpoint deltas applied, ADR 0018), for the conversation view; read once.
        const whole = task === undefined ? yield* store.getHistory(id, { start: 0, count: length }) : undefined
        const history = whole?.slice(start) ?? (yield* store.getHistory(id, { start, count: MAX_HISTORY }))
        const last = history.at(-1)?.event._tag
        const lastPayload = whole === undefined ? undefined : fold(whole.filter((e) => e.event._tag !== "TaskExpired"))?.payload ?? null
        return {
          task: task ?? null,
          status: task?.status ?? (last === "TaskExpired" ? "expired" : null),
          ...(lastPayload !== undefined ? { lastPayload } : {}),
          historyLength: length,
          historyStart: start,
          history
        }
      })
    ))
}
