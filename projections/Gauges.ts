/**
 * Live gauges: the numbers that describe *now* rather than a period, read straight from the structures
 * the task scripts already keep, without scanning tasks:
 * - tasks per status: ZCOUNT (-inf +inf of each partition's `idx:<status>` (all but its anchor, streams/Keys.ts;
 *   expired tasks have no index: not counted);
 * - per agent (from each partition's `agents` set): queue depth, deliveries in flight and the oldest
 *   waiting entry, from XLEN, XINFO GROUPS and one XRANGE of `queue:<agent>` (group named after the agent);
 * - workers: the consumers of those groups (XINFO CONSUMERS; a worker is a consumer, named by its worker
 *   id, in the group of each agent it serves; maintenance's own `maintenance-<id>` consumers are not
 *   workers and are left out), and which of them are **live**: one ZMSCORE of the namespace's consumer
 *   registry `{ns}:consumers` (src/Maintenance.ts) for their names. A registered consumer is live while its
 *   registration has not lapsed (score > now), whatever its idle time: before Redis 7.2 XINFO's `idle` only
 *   restarts on a read that *delivered* entries, so a live worker of an empty queue looks idle forever. A
 *   consumer with no registration (a process of a version that does not register) falls back to the old
 *   rule: live if idle for at most `liveWithinMs`.
 *
 * Waiting entries are the group's `lag` (XINFO GROUPS, Redis 7.0: entries added but not yet delivered). A
 * queue keeps finished deliveries acked until maintenance trims it, so XLEN counts those too; only where
 * Redis cannot tell the lag (a stream with entries deleted after the last delivered one, as older versions
 * left) XLEN − pending stands in for it, counting not yet trimmed ones as waiting. The counts are a snapshot read
 * partition by partition, not one atomic view; a cancelled task's stale entry counts as waiting until a
 * worker skips it.
 */
import { Clock, Context, Effect, Layer } from "effect"
import { allPartitions, type Keyspace, MAINTENANCE_CONSUMER_PREFIX, namespaceKeys, partitionKeys } from "../streams/Keys.ts"
import { RedisClient } from "../streams/RedisClient.ts"
import type { RedisError } from "../streams/StreamError.ts"
import { type TaskStatus, TaskStatus as TaskStatusSchema } from "../streams/TaskEvent.ts"

/** The statuses that have an index (an expired task's hot data is gone). */
export type IndexedStatus = Exclude<TaskStatus, "expired">
export const indexedStatuses: ReadonlyArray<IndexedStatus> = TaskStatusSchema.literals.filter(
  (s): s is IndexedStatus => s !== "expired"
)

export interface WorkerGauge {
  /** The consumer name (the worker id). */
  readonly name: string
  /**
   * Smallest idle time over the agent's partitions, ms (XINFO CONSUMERS `idle`: before Redis 7.2, the time
   * since its last read that delivered entries).
   */
  readonly idleMs: number
  /** Deliveries it holds (summed over partitions). */
  readonly pending: number
  /** Until when (ms) a running process vouches for it in `{ns}:consumers`; null when it is not registered. */
  readonly registeredUntil: number | null
  /** Registered and not lapsed; or, with no registration, idle for at most `liveWithinMs`. */
  readonly live: boolean
}

export interface QueueGauge {
  readonly agent: string
  /** Entries not yet delivered to any worker. */
  readonly waiting: number
  /** Entries delivered and not yet finished. */
  readonly inFlight: number
  /** When the oldest waiting entry was queued (ms, from its stream id), and its age now. */
  readonly oldestWaitingAt: number | null
  readonly oldestWaitingAgeMs: number | null
  /** Every worker consumer of the agent's group (any partition), live or not, by name. */
  readonly workers: ReadonlyArray<WorkerGauge>
  /** The live ones among `workers`. */
  readonly liveWorkers: ReadonlyArray<WorkerGauge>
}

export interface GaugeSnapshot {
  /** When the snapshot was taken (ms). */
  readonly at: number
  readonly tasksByStatus: Readonly<Record<IndexedStatus, number>>
  readonly queues: ReadonlyArray<QueueGauge>
  /** Distinct live workers over all agents. */
  readonly liveWorkers: number
}

export interface GaugeOptions {
  /**
   * A consumer with no registration in `{ns}:consumers` counts as a live worker if XINFO CONSUMERS shows it
   * idle for at most this long (default 30 s). Registered consumers are judged by their registration alone.
   */
  readonly liveWithinMs?: number
}

/** Default of `GaugeOptions.liveWithinMs`. */
export const DEFAULT_LIVE_WITHIN_MS = 30_000

/** Whether a worker consumer counts as live at `now` (see `WorkerGauge.live`). */
export const isLiveWorker = (
  worker: { readonly registeredUntil: number | null; readonly idleMs: number },
  now: number,
  liveWithinMs: number
): boolean => worker.registeredUntil !== null ? worker.registeredUntil > now : worker.idleMs <= liveWithinMs

/** Names per ZMSCORE call when reading the registry. */
const REGISTRY_CHUNK = 1_000

const idMillis = (id: string): number => Number(id.split("-")[0])

/** Reads a flat [name, value, …] reply into an object. */
const fields = (flat: ReadonlyArray<unknown>): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1]
  return out
}

interface PartitionQueue {
  readonly agent: string
  /** Entries not yet delivered to the agent's group. */
  readonly waiting: number
  readonly pending: number
  readonly lastDelivered: string | undefined
  readonly consumers: ReadonlyArray<{ readonly name: string; readonly pending: number; readonly idle: number }>
}

export class Gauges extends Context.Service<Gauges, {
  readonly read: (options?: GaugeOptions) => Effect.Effect<GaugeSnapshot, RedisError>
}>()("factorial/projections/Gauges") {
  static readonly layer = (keyspace: Keyspace) =>
    Layer.effect(
      Gauges,
      Effect.gen(function*() {
        const redis = yield* RedisClient

        /** Status counts and queue figures of one partition (two round trips). */
        const readPartition = (p: number) =>
          redis.use("gauges", async (c) => {
            const k = partitionKeys(keyspace, p)
            const first = c.pipeline()
            for (const s of indexedStatuses) first.zcount(k.index(s), "(-inf", "+inf")
            first.smembers(k.agents)
            const r1 = (await first.exec()) ?? []
            const counts = indexedStatuses.map((_, i) => Number(r1[i]?.[1] ?? 0))
            const agents = ((r1[indexedStatuses.length]?.[1] ?? []) as Array<string>).sort()

            const second = c.pipeline()
            for (const agent of agents) {
              second.xlen(k.queue(agent))
              second.call("XINFO", "GROUPS", k.queue(agent))
              second.call("XINFO", "CONSUMERS", k.queue(agent), agent)
            }
            const r2 = (await second.exec()) ?? []
            // Missing stream or group (no worker has read yet) answers with an error: nothing delivered.
            const queues: Array<PartitionQueue> = agents.map((agent, i) => {
              const [lenErr, len] = r2[3 * i] ?? [null, 0]
              const [groupsErr, groups] = r2[3 * i + 1] ?? [null, []]
              const [consumersErr, consumers] = r2[3 * i + 2] ?? [null, []]
              const group = groupsErr
                ? undefined
                : (groups as Array<Array<unknown>>).map(fields).find((g) => g.name === agent)
              return {
                agent,
                waiting: lenErr
                  ? 0
                  : group === undefined
                  ? Number(len) // no group yet: nothing delivered
                  : typeof group.lag === "number"
                  ? group.lag
                  : Math.max(0, Number(len) - Number(group.pending)),
                pending: group === undefined ? 0 : Number(group.pending),
                lastDelivered: group === undefined ? undefined : String(group["last-delivered-id"]),
                consumers: consumersErr ? [] : (consumers as Array<Array<unknown>>).map(fields).map((f) => ({
                  name: String(f.name),
                  pending: Number(f.pending),
                  idle: Number(f.idle)
                })).filter((c) => !c.name.startsWith(MAINTENANCE_CONSUMER_PREFIX))
              }
            })

            // The oldest waiting entry is the first one after the group's last delivered id.
            const third = c.pipeline()
            for (const q of queues) {
              third.call("XRANGE", k.queue(q.agent), q.lastDelivered === undefined ? "-" : `(${q.lastDelivered}`, "+", "COUNT", 1)
            }
            const r3 = (await third.exec()) ?? []
            const oldest = queues.map((_, i) => {
              const [err, entries] = r3[i] ?? [null, []]
              const id = err ? undefined : (entries as Array<[string, unknown]>)[0]?.[0]
              return id === undefined ? undefined : idMillis(id)
            })
            return { counts, queues, oldest }
          })

        /**
         * The registrations of `names` in `{ns}:consumers` (ms; absent when not registered). One key (its own
         * slot on a cluster), read by member, so the work is bounded by the consumers listed, not the registry.
         */
        const readRegistry = (names: ReadonlyArray<string>) =>
          names.length === 0
            ? Effect.succeed(new Map<string, number>())
            : redis.use("gauges registry", async (c) => {
              const registry = namespaceKeys(keyspace).consumers
              const pipeline = c.pipeline()
              for (let from = 0; from < names.length; from += REGISTRY_CHUNK) {
                pipeline.zmscore(registry, ...names.slice(from, from + REGISTRY_CHUNK))
              }
              const replies = (await pipeline.exec()) ?? []
              const until = new Map<string, number>()
              replies.forEach(([err, scores], chunk) => {
                if (err) throw err
                ;(scores as Array<string | null>).forEach((score, i) => {
                  if (score !== null) until.set(names[chunk * REGISTRY_CHUNK + i]!, Number(score))
                })
              })
              return until
            })

        const read = (options?: GaugeOptions) =>
          Effect.gen(function*() {
            const liveWithinMs = options?.liveWithinMs ?? DEFAULT_LIVE_WITHIN_MS
            const parts = yield* Effect.forEach(allPartitions(keyspace), readPartition, { concurrency: 16 })
            const names = [...new Set(parts.flatMap((part) => part.queues.flatMap((q) => q.consumers.map((c) => c.name))))]
            const registered = yield* readRegistry(names)
            const at = yield* Clock.currentTimeMillis

            const tasksByStatus = Object.fromEntries(indexedStatuses.map((s) => [s, 0])) as Record<IndexedStatus, number>
            const byAgent = new Map<string, {
              waiting: number
              inFlight: number
              oldest: number | undefined
              workers: Map<string, { idleMs: number; pending: number }>
            }>()
            for (const part of parts) {
              indexedStatuses.forEach((s, i) => tasksByStatus[s] += part.counts[i]!)
              part.queues.forEach((q, i) => {
                const a = byAgent.get(q.agent) ?? { waiting: 0, inFlight: 0, oldest: undefined, workers: new Map() }
                a.waiting += q.waiting
                a.inFlight += q.pending
                const o = part.oldest[i]
                if (o !== undefined && (a.oldest === undefined || o < a.oldest)) a.oldest = o
                for (const c of q.consumers) {
                  const w = a.workers.get(c.name)
                  a.workers.set(c.name, {
                    idleMs: Math.min(w?.idleMs ?? Infinity, c.idle),
                    pending: (w?.pending ?? 0) + c.pending
                  })
                }
                byAgent.set(q.agent, a)
              })
            }
            const live = new Set<string>()
            const queues: Array<QueueGauge> = [...byAgent].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(
              ([agent, a]) => {
                const workers = [...a.workers].sort(([x], [y]) => x < y ? -1 : x > y ? 1 : 0).map(
                  ([name, w]): WorkerGauge => {
                    const registeredUntil = registered.get(name) ?? null
                    return { name, ...w, registeredUntil, live: isLiveWorker({ registeredUntil, idleMs: w.idleMs }, at, liveWithinMs) }
                  }
                )
                const liveWorkers = workers.filter((w) => w.live)
                for (const w of liveWorkers) live.add(w.name)
                return {
                  agent,
                  waiting: a.waiting,
                  inFlight: a.inFlight,
                  oldestWaitingAt: a.oldest ?? null,
                  oldestWaitingAgeMs: a.oldest === undefined ? null : Math.max(0, at - a.oldest),
                  workers,
                  liveWorkers
                }
              }
            )
            return { at, tasksByStatus, queues, liveWorkers: live.size } satisfies GaugeSnapshot
          })

        return Gauges.of({ read })
      })
    )
}
