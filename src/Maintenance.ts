/**
 * Maintenance: the loop that keeps the task space healthy. Safe to run in every process at once, since
 * every action is a guarded script:
 * - recovery: XAUTOCLAIM queue entries idle past the agent's heartbeat timeout, then `Recover` (requeue
 *   with one more retry, fail when exhausted, or cancel if requested);
 * - backoff wake-ups, on time: the loop sleeps until the earliest retry time (or `interval`), and local
 *   workers poke it when they schedule an earlier one;
 * - wait timeouts, on time too: waiting tasks past their deadline (`waits` set) are timed out (`TimeoutWait`:
 *   failed, or resumed with timeout results, as each item says);
 * - follow-up steps nobody ran (the `outbox`, e.g. after a crash right after a terminal commit): a finished
 *   child's parent is told, a finished parent's children are cancelled (src/FollowUp.ts);
 * - expiry of finished tasks past their TTL (`TaskExpired`; the history keeps its own retention): one batch
 *   of `maxCleanupBatch` per terminal status per partition, then, while some status still has more past due,
 *   further batches round the partitions until none is left or the pass has spent `expiryBudget` on them
 *   (so a backlog drains in a pass or a few without holding up recoveries and wake-ups for long);
 * - trimming of the partition event logs by age, never past what the projector has not yet read;
 * - one rewrite of a Redis append-only file after the server started (src/AofRewrite.ts; a Redis 7.0 bug);
 *   the connection's "ready" after an outage or a restart starts a pass at once;
 * - deletion of dead consumers, at a low frequency (every `deadConsumerAfterMs`, see there): every process
 *   leaves a consumer named by its worker id in the group of each of its agents' queues (created by its
 *   maintenance at start in the partitions that know the agent, since on Redis < 7.2 a read that delivers
 *   nothing creates no consumer; elsewhere by its first delivery), `maintenance-<id>` where it recovered entries, and the
 *   projector's in the `projector` group of each partition log; nothing else ever removes them. A consumer
 *   is deleted (XGROUP DELCONSUMER) when it has 0 pending entries, has been idle longer than
 *   `deadConsumerAfterMs`, and no running process vouches for its name in the `{ns}:consumers` registry
 *   (each process's maintenance keeps its names there, alive until a time it renews, and marks its worker
 *   and maintenance names lapsed on a clean stop; lapsed names stay another `deadConsumerAfterMs`, so the
 *   live-worker gauges tell a stopped worker from one of a process that never registers). The registry,
 *   not XINFO's `idle`, is what keeps a live consumer (and what the gauges count as a live worker): on Redis
 *   < 7.2 `idle` counts from the last read or claim that *delivered* entries, so a live worker of an empty
 *   queue looks idle forever (from 7.2 it counts from the last attempt). The pending check is repeated inside the deleting script, atomically with the delete, so
 *   an entry a consumer reads in between is never dropped from the pending list (deleting a consumer with
 *   nothing pending is otherwise harmless: its next read creates it again); a consumer with pending entries
 *   stays until recovery (XAUTOCLAIM) or the projector's orphan adoption has moved them.
 */
import { Deferred, Effect, Exit, Random } from "effect"
import { rewriteAofAfterRestart } from "./AofRewrite.ts"
import { settle } from "./FollowUp.ts"
import type { TaskCommand } from "../projections/TaskDecider.ts"
import { allPartitions, MAINTENANCE_CONSUMER_PREFIX, namespaceKeys, partitionKeys } from "../streams/Keys.ts"
import { RedisClient, type RedisConnection } from "../streams/RedisClient.ts"
import { compareIds } from "../streams/StreamId.ts"
import { flatToRecord, TaskStore, type Delivery } from "./TaskStore.ts"
import { ensureGroups } from "./Worker.ts"
import type { MaintenanceWorkerConfig } from "./Config.ts"

export interface MaintainedAgent {
  readonly name: string
  /** Seconds without a heartbeat after which a lease is revoked. */
  readonly heartbeatTimeout: number
}

export interface MaintenanceOptions {
  readonly agents: ReadonlyArray<MaintainedAgent>
  readonly config: MaintenanceWorkerConfig
  readonly workerId: string
  /** The projector's consumer group on the partition logs, whose unread entries must not be trimmed. */
  readonly projectorGroup?: string
  /** The consumer name this process's projector reads `projectorGroup` with, kept registered as live. */
  readonly projectorConsumer?: string
  /**
   * The projector's live checkpoint field in each partition's `checkpoints` hash: the log is never trimmed past
   * it. The projector reads with NOACK, so an entry it read but never committed (a crash in between) is
   * behind the group's last delivered id, and only the checkpoint still says it is needed.
   */
  readonly projectorCheckpointField?: string
}

export interface MaintenanceReport {
  readonly recovered: number
  readonly woken: number
  readonly expired: number
  /** Waiting tasks whose wait items timed out. */
  readonly timedOut: number
  /** Follow-up steps run from the outbox. */
  readonly followedUp: number
  /** Earliest pending backoff wake-up or wait deadline (ms), if any. */
  readonly nextWakeAt: number | undefined
  /** Dead consumers deleted from the queue and projector groups (0 in a pass that did not sweep them). */
  readonly consumersDeleted: number
}

/** An outbox entry is swept once it is this old: the committer runs the step at once, normally. */
const OUTBOX_GRACE_MS = 1_000

const terminal = ["completed", "failed", "cancelled"] as const

/** The consumer name maintenance claims with (XAUTOCLAIM) in the agent queue groups. */
export const maintenanceConsumer = (workerId: string): string => `${MAINTENANCE_CONSUMER_PREFIX}${workerId}`

/**
 * A dead worker's entries are recovered at most `heartbeatTimeout + interval` after its last heartbeat;
 * a consumer idle for this many times that (and at least MIN_DEAD_CONSUMER_MS) may be deleted.
 */
const DEAD_CONSUMER_FACTOR = 5
/** Twice the 1 s BLOCK of a worker's reads, so tiny test settings still leave a live reader alone. */
const MIN_DEAD_CONSUMER_MS = 2_000

/**
 * How long (ms) a consumer must have been idle, with 0 pending entries and no live registration, before
 * maintenance deletes it: 5 × (the longest heartbeat timeout of the agents + `interval`), at least 2 s
 * (defaults: 5 × (30 s + 10 s) = 200 s). It is also how long a process's registration stays valid without
 * renewal (renewed every quarter of it), and how often a process sweeps.
 */
export const deadConsumerAfterMs = (options: Pick<MaintenanceOptions, "agents" | "config">): number =>
  Math.max(
    MIN_DEAD_CONSUMER_MS,
    Math.round(DEAD_CONSUMER_FACTOR * 1000 * (Math.max(0, ...options.agents.map((a) => a.heartbeatTimeout)) + options.config.interval))
  )

/** The consumer names this process reads or claims with, which it keeps registered while it runs. */
const ownConsumers = (options: MaintenanceOptions): ReadonlyArray<string> => [
  options.workerId,
  maintenanceConsumer(options.workerId),
  ...(options.projectorConsumer !== undefined ? [options.projectorConsumer] : [])
]

/** One pass over every partition; `sweepConsumers` also deletes dead consumers (a low-frequency job). */
export const maintainOnce = (options: MaintenanceOptions, pass: { readonly sweepConsumers?: boolean } = {}) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    const { config } = options
    const consumer = maintenanceConsumer(options.workerId)
    const clock = Effect.clockWith((c) => c.currentTimeMillis)
    const now = yield* clock
    let recovered = 0
    let woken = 0
    let expired = 0
    let timedOut = 0
    let followedUp = 0
    let nextWakeAt: number | undefined
    const earliest = (reply: ReadonlyArray<string>) => {
      if (reply[1] !== undefined) nextWakeAt = Math.min(nextWakeAt ?? Infinity, Number(reply[1]))
    }
    /** Runs the follow-up step of each task; a failure is left to the next pass. */
    const followUp = (taskIds: ReadonlyArray<string>) =>
      Effect.forEach(taskIds, (taskId) =>
        settle(taskId).pipe(
          Effect.as(1),
          Effect.catch((e) => Effect.as(Effect.logWarning(`follow-up of task ${taskId} failed: ${e.message}`), 0))
        )).pipe(Effect.map((ns) => ns.reduce((a, b) => a + b, 0)))

    const accepted = (outcomes: ReadonlyArray<unknown>) => outcomes.filter((o) => o !== null && typeof o === "object" && "values" in o).length

    /**
     * Expires up to `maxCleanupBatch` of the oldest tasks of a terminal status past its TTL (the cutoff is
     * fixed by the pass's `now`). True when there may be more: the batch was full and made progress (a batch
     * that expired nothing — another process got there first, or stray index members — is not retried).
     */
    const expireBatch = (index: string, status: typeof terminal[number]) =>
      Effect.gen(function*() {
        const cutoff = now - config.taskTtl.ttlOf(status) * 1000
        const old = yield* redis.use("zrangebyscore", (c) =>
          c.zrangebyscore(index, "(-inf", cutoff, "LIMIT", 0, config.maxCleanupBatch) // not the anchor (-inf)
        )
        const n = accepted(
          yield* store.executeMany(old.map((taskId): { command: TaskCommand } => ({ command: { _tag: "Expire", taskId, now } })), {
            historyTtlSeconds: config.taskTtl.historyTtl
          })
        )
        expired += n
        return old.length >= config.maxCleanupBatch && n > 0
      })
    let backlog: Array<{ readonly index: string; readonly status: typeof terminal[number] }> = []

    for (const p of allPartitions(ks)) {
      const keys = partitionKeys(ks, p)

      for (const agent of options.agents) {
        const queue = keys.queue(agent.name)
        const minIdle = Math.round(agent.heartbeatTimeout * 1000)
        // XAUTOCLAIM examines at most COUNT × 10 pending entries per call: follow its cursor through
        // the whole pending list (live leases are skipped) until it wraps or a batch has been taken.
        let cursor = "0-0"
        let taken = 0
        do {
          const [next, entries, deleted] = yield* redis.use("xautoclaim", (c) =>
            c.xautoclaim(queue, agent.name, consumer, minIdle, cursor, "COUNT", config.maxCleanupBatch) as Promise<
              [string, Array<[string, Array<string> | null]>, Array<string>]
            >
          ).pipe(Effect.catchTag("RedisError", (e) =>
            // NOGROUP: no worker of this agent ever started in this partition; nothing to recover.
            e.message.includes("NOGROUP") ? Effect.succeed(["0-0", [], []] as const) : Effect.fail(e)))
          cursor = next
          taken += entries.length
          const commands: Array<{ command: TaskCommand; delivery: Delivery }> = []
          for (const [entryId, fields] of entries) {
            if (fields === null) continue
            const f = flatToRecord(fields)
            commands.push({
              command: { _tag: "Recover", taskId: f.t ?? "", lease: Number(f.l) + 1, now },
              delivery: { entryId, agent: agent.name }
            })
          }
          const outcomes = yield* store.executeMany(commands)
          recovered += accepted(outcomes)
          // A recovery may have ended a task (failed, or cancelled as requested): its follow-up, now.
          followedUp += yield* followUp(commands.filter((_, i) => {
            const o = outcomes[i]
            return o !== undefined && "values" in o && o.values[0] !== "requeued"
          }).map(({ command }) => command.taskId))
          const gone = [...deleted, ...entries.flatMap(([id, f]) => f === null ? [id] : [])]
          if (gone.length > 0) yield* redis.use("xack", (c) => c.xack(queue, agent.name, ...gone))
        } while (cursor !== "0-0" && taken < config.maxCleanupBatch)
      }

      const due = yield* redis.use("zrangebyscore", (c) =>
        c.zrangebyscore(keys.delayed, "-inf", now, "LIMIT", 0, config.maxCleanupBatch)
      )
      woken += accepted(yield* store.executeMany(due.map((taskId): { command: TaskCommand } => ({ command: { _tag: "WakeUp", taskId, now } }))))
      earliest(yield* redis.use("zrange", (c) => c.zrange(keys.delayed, "0", "0", "WITHSCORES")))

      const overdue = yield* redis.use("zrangebyscore", (c) =>
        c.zrangebyscore(keys.waits, "-inf", now, "LIMIT", 0, config.maxCleanupBatch)
      )
      const timeouts = yield* store.executeMany(overdue.map((taskId): { command: TaskCommand } => ({ command: { _tag: "TimeoutWait", taskId, now } })))
      timedOut += accepted(timeouts)
      // A timeout fails the task or abandons children: their follow-up, now.
      followedUp += yield* followUp(overdue.filter((_, i) => {
        const o = timeouts[i]
        return o !== undefined && "values" in o && o.values[0] !== "resumed"
      }))
      earliest(yield* redis.use("zrange", (c) => c.zrange(keys.waits, "0", "0", "WITHSCORES")))

      const unsettled = yield* redis.use("zrangebyscore", (c) =>
        c.zrangebyscore(keys.outbox, "-inf", now - OUTBOX_GRACE_MS, "LIMIT", 0, config.maxCleanupBatch)
      )
      followedUp += yield* followUp(unsettled)

      for (const status of terminal) {
        const index = keys.index(status)
        if (yield* expireBatch(index, status)) backlog.push({ index, status })
      }

      yield* trimEventLog(redis.conn, keys, now - config.eventLogRetention * 1000, options)
      for (const agent of options.agents) yield* trimQueue(redis.conn, keys.queue(agent.name), agent.name)
    }

    // Expiry backlog: every status of every partition had one batch above; while some still had a full batch
    // past due, keep going round them, one batch each, until they are drained or the budget is spent.
    const drainUntil = (yield* clock) + config.expiryBudget * 1000
    while (backlog.length > 0 && (yield* clock) < drainUntil) {
      const more: typeof backlog = []
      for (const item of backlog) {
        if ((yield* clock) >= drainUntil) break
        if (yield* expireBatch(item.index, item.status)) more.push(item)
      }
      backlog = more
    }

    const consumersDeleted = pass.sweepConsumers === true
      ? yield* sweepDeadConsumers(options).pipe(
        Effect.catch((e) => Effect.as(Effect.logWarning(`dead consumer sweep failed: ${e.message}`), 0))
      )
      : 0
    return { recovered, woken, expired, timedOut, followedUp, nextWakeAt, consumersDeleted } satisfies MaintenanceReport
  })

/**
 * Deletes the consumers named in ARGV[2..] from group ARGV[1] of stream KEYS[1] that have no pending entries
 * *now*, in the same atomic step as the delete, so an entry a consumer read since it was listed is never
 * dropped from the group's pending list. (Not XINFO CONSUMERS here: copying thousands of consumers into Lua
 * takes tens of ms; XPENDING of one consumer is O(1) when it has nothing pending.) XGROUP CREATECONSUMER
 * answers 0 for a consumer that exists, so one that another process's sweep deleted meanwhile is not
 * counted (the create and the delete cancel out). Returns how many were deleted.
 */
const DELETE_DEAD_CONSUMERS = `
local deleted = 0
for i = 2, #ARGV do
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[i])
  if pending['err'] ~= nil then return deleted end
  if #pending == 0 then
    if redis.call('XGROUP', 'CREATECONSUMER', KEYS[1], ARGV[1], ARGV[i]) == 0 then deleted = deleted + 1 end
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[i])
  end
end
return deleted
`

/**
 * Deletes those of `names` in `group` of `stream` that have nothing pending at that moment (atomically);
 * returns how many existed and were deleted.
 */
export const deleteIdleConsumers = (stream: string, group: string, names: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    if (names.length === 0) return 0
    const redis = yield* RedisClient
    return Number(yield* redis.use("delete dead consumers", (c) => c.eval(DELETE_DEAD_CONSUMERS, 1, stream, group, ...names)))
  })

interface ConsumerInfo {
  readonly name: string
  readonly pending: number
  readonly idle: number
}

/**
 * Deletes dead consumers from the groups of every agent queue (the agents of this process and those in
 * each partition's `agents` set) and from the projector group of every partition log. Returns the count.
 */
export const sweepDeadConsumers = (options: MaintenanceOptions) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    const registry = namespaceKeys(ks).consumers
    const deadAfter = deadConsumerAfterMs(options)
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    const live = new Set(yield* redis.use("zrangebyscore", (c) => c.zrangebyscore(registry, now, "+inf")))
    // Lapsed names stay one more threshold: until then the gauges know the consumer as stopped (after it,
    // its idle time is past the threshold, or it is gone).
    yield* redis.use("zremrangebyscore", (c) => c.zremrangebyscore(registry, "-inf", `(${now - deadAfter}`))
    let deleted = 0
    for (const p of allPartitions(ks)) {
      const keys = partitionKeys(ks, p)
      const known = yield* redis.use("smembers", (c) => c.smembers(keys.agents))
      const groups = [...new Set([...options.agents.map((a) => a.name), ...known])].sort().map((agent) => ({
        stream: keys.queue(agent),
        group: agent
      }))
      if (options.projectorGroup !== undefined) groups.push({ stream: keys.events, group: options.projectorGroup })
      const infos = yield* redis.use("xinfo consumers", async (c) => {
        const pipeline = c.pipeline()
        for (const g of groups) pipeline.call("XINFO", "CONSUMERS", g.stream, g.group)
        // A missing stream or group (nobody read it yet) answers with an error: no consumers.
        return ((await pipeline.exec()) ?? []).map(([err, reply]): ReadonlyArray<ConsumerInfo> =>
          err ? [] : (reply as Array<Array<string>>).map(flatToRecord).map((f) => ({
            name: String(f.name),
            pending: Number(f.pending),
            idle: Number(f.idle)
          }))
        )
      })
      for (const [i, g] of groups.entries()) {
        const dead = (infos[i] ?? []).filter((c) => c.pending === 0 && c.idle > deadAfter && !live.has(c.name)).map((c) => c.name)
        for (let from = 0; from < dead.length; from += options.config.maxCleanupBatch) {
          deleted += yield* deleteIdleConsumers(g.stream, g.group, dead.slice(from, from + options.config.maxCleanupBatch))
        }
      }
    }
    if (deleted > 0) yield* Effect.logInfo(`maintenance deleted ${deleted} dead consumer${deleted === 1 ? "" : "s"} (idle over ${deadAfter} ms, nothing pending)`)
    return deleted
  })

/** Vouches, until `until` (ms), that this process's consumers are alive. */
const registerConsumers = (options: MaintenanceOptions, until: number) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const registry = namespaceKeys(store.keyspace).consumers
    yield* redis.use("zadd", (c) => c.zadd(registry, ...ownConsumers(options).flatMap((name) => [until, name])))
  })

/**
 * Makes the worker id a consumer in the group of each of this process's agents, in each partition whose
 * `agents` set names the agent (creating the group if needed). Its first delivery there would do that; until
 * then the gauges, which find an agent's workers among its group's consumers, would not see it: on Redis < 7.2
 * a read that delivers nothing creates no consumer, so a worker whose queue stayed empty since it started
 * would be in no group. Partitions that do not name the agent are left alone: the gauges do not look there
 * (and the sweep would not either, so a consumer there would outlive the agent), and its first task there
 * reaches a live worker, whose read creates the consumer.
 */
const createWorkerConsumers = (options: MaintenanceOptions) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    yield* redis.use("xgroup createconsumer", (c) =>
      Promise.all(allPartitions(ks).map(async (p) => {
        const keys = partitionKeys(ks, p)
        const known = new Set(await c.smembers(keys.agents))
        await Promise.all(options.agents.filter((a) => known.has(a.name)).map(async (agent) => {
          await ensureGroups(c, [keys.queue(agent.name)], agent.name)
          await c.call("XGROUP", "CREATECONSUMER", keys.queue(agent.name), agent.name, options.workerId)
        }))
      })))
  })

/**
 * The oldest entry of `stream` that `group` may still need: its oldest pending entry, else its last delivered
 * one (entries after it are undelivered); undefined without the group. Everything before it was delivered and
 * acked, so trimming to it (XTRIM MINID) is safe even as readers go on: new deliveries and claims only touch
 * entries at or after it.
 */
const deliveredFloor = async (conn: RedisConnection, stream: string, group: string): Promise<string | undefined> => {
  // Both in one round trip; without the group (NOGROUP) there is nothing to keep or trim for it.
  const [groups, pending] = (await Promise.all([
    conn.xinfo("GROUPS", stream).catch(() => []),
    conn.xpending(stream, group).catch(() => undefined)
  ])) as [Array<Array<unknown>>, [number, string | null, string | null, unknown] | undefined]
  const info = groups.map(flatToRecord).find((g) => g.name === group)
  if (info === undefined || pending === undefined) return undefined
  const lastDelivered = info["last-delivered-id"] ?? "0-0"
  return pending[1] !== null && compareIds(pending[1], lastDelivered) < 0 ? pending[1] : lastDelivered
}

/**
 * Trims a partition log to entries newer than `cutoffMs`, keeping everything the projector still needs: what its
 * group has not delivered, and what it has not committed (after its checkpoint). A projector that never
 * committed in this partition sets no floor (the group's still does).
 */
export const trimEventLog = (
  conn: RedisConnection,
  keys: { readonly events: string; readonly checkpoints: string },
  cutoffMs: number,
  projector: Pick<MaintenanceOptions, "projectorGroup" | "projectorCheckpointField">
) =>
  Effect.promise(async () => {
    let minId = `${Math.max(0, Math.floor(cutoffMs))}-0`
    const [delivered, applied] = await Promise.all([
      projector.projectorGroup === undefined ? undefined : deliveredFloor(conn, keys.events, projector.projectorGroup),
      projector.projectorCheckpointField === undefined
        ? undefined
        : conn.hget(keys.checkpoints, projector.projectorCheckpointField).then((c) => c ?? undefined)
    ])
    for (const floor of [delivered, applied]) {
      if (floor !== undefined && compareIds(floor, minId) < 0) minId = floor
    }
    await conn.xtrim(keys.events, "MINID", "~", minId)
  }).pipe(Effect.catchDefect(() => Effect.void))

/**
 * Trims an agent's queue to its oldest pending or undelivered entry: finished deliveries are acked, not
 * deleted, by the scripts (lib.lua `ack`), and go here in bulk.
 */
export const trimQueue = (conn: RedisConnection, queue: string, group: string) =>
  Effect.promise(async () => {
    const floor = await deliveredFloor(conn, queue, group)
    if (floor !== undefined) await conn.xtrim(queue, "MINID", floor)
  }).pipe(Effect.catchDefect(() => Effect.void))

/**
 * Runs maintenance until interrupted. Returns `poke(at)`, which local workers call when they put a task
 * into backoff or a wait with a deadline, so that the wake-up or timeout is not late by up to `interval`.
 */
export const runMaintenance = (options: MaintenanceOptions) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    let poke = Deferred.makeUnsafe<void>()
    let sleepingUntil = Infinity
    const clock = Effect.clockWith((c) => c.currentTimeMillis)
    const deadAfter = deadConsumerAfterMs(options)
    let registeredAt = -Infinity
    let consumersCreated = false
    // Processes started together (a deploy) sweep at different times.
    let sweepAt = (yield* clock) + Math.round(deadAfter * (yield* Random.next))
    // On a clean stop (after the worker pools, whose finalizers run first, have handed their work back),
    // this process's own names are marked lapsed now (not removed: so the gauges count its worker as
    // stopped at once, rather than judge it by idle time like a process that never registers; the sweep
    // removes them later). The projector's name may be shared by other orchestrators of this process
    // (host-pid): it is left to expire.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const now = yield* clock
        yield* redis.use("zadd", (c) =>
          c.zadd(namespaceKeys(store.keyspace).consumers, now, options.workerId, now, maintenanceConsumer(options.workerId))
        )
      }).pipe(Effect.ignore)
    )
    const loop = Effect.gen(function*() {
      // A poke during the pass (which may have read the sets before that commit) asks for another pass at once.
      const poked = Deferred.makeUnsafe<void>()
      poke = poked
      sleepingUntil = Infinity
      const start = yield* clock
      if (start - registeredAt >= deadAfter / 4) {
        yield* registerConsumers(options, start + deadAfter).pipe(
          Effect.andThen(Effect.sync(() => registeredAt = start)),
          Effect.catch((e) => Effect.logWarning(`maintenance could not register its consumers: ${e.message}`))
        )
      }
      if (!consumersCreated) {
        yield* createWorkerConsumers(options).pipe(
          Effect.andThen(Effect.sync(() => consumersCreated = true)),
          Effect.catch((e) => Effect.logWarning(`maintenance could not create its worker's consumers: ${e.message}`))
        )
      }
      if (options.config.rewriteAofAfterRestart) yield* rewriteAofAfterRestart(redis.conn)
      const sweepConsumers = start >= sweepAt
      if (sweepConsumers) sweepAt = start + deadAfter
      const report = yield* maintainOnce(options, { sweepConsumers }).pipe(
        Effect.catchCause((cause) => Effect.as(Effect.logWarning("maintenance pass failed", cause), undefined))
      )
      const now = yield* clock
      const wakeAt = Math.min(now + options.config.interval * 1000, report?.nextWakeAt ?? Infinity)
      sleepingUntil = wakeAt
      yield* Effect.raceFirst(Effect.sleep(Math.max(0, wakeAt - now)), Deferred.await(poked))
    }).pipe(Effect.forever)
    yield* Effect.forkScoped(loop)
    // Redis back after an outage or a restart: a pass at once, not up to `interval` later. Work that waited on
    // the outage resumes sooner, and a restarted server's AOF is rewritten sooner (the window in which a second
    // crash can replay a torn transaction, src/AofRewrite.ts, shrinks to the reconnect and the rewrite).
    const onReady = () => Deferred.doneUnsafe(poke, Exit.void)
    redis.conn.on("ready", onReady)
    yield* Effect.addFinalizer(() => Effect.sync(() => redis.conn.off("ready", onReady)))
    return {
      poke: (retryAt: number) => {
        if (retryAt < sleepingUntil) Deferred.doneUnsafe(poke, Exit.void)
      }
    }
  })
