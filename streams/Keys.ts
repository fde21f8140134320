/**
 * Every Redis key name, in one place (docs/redis-keys.md lists each with its type, writer and retention).
 *
 * Invariant: all keys one atomic step touches share the hash tag `{<namespace>:<partition>}`, and a
 * task's partition follows from its id alone, so every script runs on one Redis Cluster slot.
 */

export interface Keyspace {
  readonly namespace: string
  readonly partitions: number
}

/** FNV-1a (32 bit) of the id, modulo the partition count: stable across processes and languages. */
export const partitionOf = (ks: Keyspace, taskId: string): number => {
  if (ks.partitions <= 1) return 0
  let hash = 0x811c9dc5
  for (let i = 0; i < taskId.length; i++) {
    hash ^= taskId.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash % ks.partitions
}

/** The hash-tagged prefix of partition `p`. */
export const partitionPrefix = (ks: Keyspace, p: number): string => `{${ks.namespace}:${p}}`

export const allPartitions = (ks: Keyspace): ReadonlyArray<number> => Array.from({ length: ks.partitions }, (_, p) => p)

/** Keys of one partition. */
export const partitionKeys = (ks: Keyspace, p: number) => {
  const pre = partitionPrefix(ks, p)
  return {
    /** Stream: every event of every task of this partition (the projector's input, the live feed). */
    events: `${pre}:events`,
    /** Stream + consumer group named after the agent: the agent's work queue. */
    queue: (agent: string) => `${pre}:queue:${agent}`,
    /** Sorted set: task id → retry time, for tasks in backoff. */
    delayed: `${pre}:delayed`,
    /** Sorted set: task id → deadline (earliest timeout of its outstanding wait items), for waiting tasks. */
    waits: `${pre}:waits`,
    /**
     * Sorted set: task id → time its follow-up step became due (telling its parent and batch of its end,
     * cancelling its children); removed by the step (src/FollowUp.ts), swept by maintenance.
     */
    outbox: `${pre}:outbox`,
    /**
     * Sorted set per status: task id → time it entered that status, and INDEX_ANCHOR (score -inf), which
     * readers skip.
     */
    index: (status: string) => `${pre}:idx:${status}`,
    /** Set of agent names that have queues in this partition. */
    agents: `${pre}:agents`,
    /** Hash: projector name → last applied partition-log id. */
    checkpoints: `${pre}:checkpoints`,
    /** String: the consumer name of the process whose projector follows this partition's log (PX lease). */
    projectorLease: `${pre}:projector:lease`,
    /** The metrics projection's keys for one bucket width, in the `live` set or a rebuild's own set. */
    metrics: (bucketSeconds: number, set: string = "live") => metricsKeys(pre, bucketSeconds, set)
  }
}

/**
 * A member every status index holds, scored -inf: each script that adds a task to an index adds it too, in the
 * same ZADD (ADR 0014). Redis keeps a sorted set of at most 128 members, each at most 64 bytes, as a listpack,
 * where an insert walks every entry: 30,000+ instructions per task for the ~100 tasks a pool has in
 * `processing`. A member longer than 64 bytes keeps the set a skiplist (O(log n)), also across restarts. It
 * cannot be a task id (TaskId starts with a letter or digit), sorts last newest-first, lies outside every time
 * window, and readers skip it. The Lua scripts get it in place of `@INDEX_ANCHOR@`.
 */
export const INDEX_ANCHOR = "#anchor: keeps this index a skiplist, not a listpack (factorial ADR 0014) #################"

/**
 * A field every metrics memory hash (`…:open`, task id → "queuedAt,claimedAt") holds, written with every batch's
 * memory: as with the status indexes (ADR 0014), a hash of at most 128 short fields is a listpack, where each
 * lookup and write walks the entries, and the memory hovers around the number of tasks in flight. A field longer
 * than 64 bytes keeps it a hashtable. It cannot be a task id (TaskId starts with a letter or digit); readers
 * skip it. metrics_apply.lua gets it in place of `@MEMORY_ANCHOR@`.
 */
export const MEMORY_ANCHOR = "#anchor: keeps this hash a hashtable, not a listpack (factorial ADR 0014) ##################"

/** Member of a metrics bucket index that says it lists every bucket of its set (never a bucket id: no colon). */
export const BUCKET_INDEX_COMPLETE = "@complete"

/** Version of the metrics projection's meaning: bump it when the fold changes, so a rebuild starts fresh keys. */
export const METRICS_VERSION = 1

/** The consumer group on each partition log that the projector reads through. */
export const PROJECTOR_GROUP = "projector"

/**
 * Prefix of the consumer name maintenance claims with (XAUTOCLAIM) in the agent queue groups,
 * `maintenance-<worker id>`: such a consumer is not a worker (the gauges leave it out).
 */
export const MAINTENANCE_CONSUMER_PREFIX = "maintenance-"

/**
 * Keys of the metrics projection of one partition (all in the partition's slot, so one script commits a batch).
 * `set` names a key set: `live` is what the projector maintains and queries read; a rebuild may write another.
 */
export const metricsKeys = (pre: string, bucketSeconds: number, set: string) => {
  const base = `${pre}:metrics:v${METRICS_VERSION}:${set}:${bucketSeconds}s`
  return {
    /** Hash per bucket: counter/histogram field → integer. Expires `retention` after its last write. */
    bucket: (agent: string, startSeconds: number) => `${base}:b:${agent}:${startSeconds}`,
    /** What every bucket hash's name starts with; the rest is its bucket id (`agent:startSeconds`). */
    bucketPrefix: `${base}:b:`,
    /** SCAN pattern matching every bucket hash of the set (only for a set written before its index existed). */
    bucketPattern: `${base}:b:*`,
    /**
     * Sorted set indexing the set's bucket hashes: bucket id → the second its hash expires (`+inf` without a
     * TTL), kept by metrics_apply.lua, so reading every bucket costs O(buckets), not a SCAN of the database.
     * Member `BUCKET_INDEX_COMPLETE` says it lists every bucket (a set older than the index lacks it).
     */
    bucketIndex: `${base}:buckets`,
    /** Hash: task id → "queuedAt,claimedAt" for tasks not yet finished (the fold's per-task memory). */
    open: `${base}:open`,
    /** Field of the partition's `checkpoints` hash: the last partition-log id applied to this set. */
    checkpointField: `metrics:v${METRICS_VERSION}:${set}:${bucketSeconds}s`
  }
}

/** Keys of one task (all in its partition's slot). */
export const taskKeys = (ks: Keyspace, taskId: string) => {
  const p = partitionOf(ks, taskId)
  const pre = partitionPrefix(ks, p)
  return {
    partition: p,
    /** Hash: the task's status projection and hot data. */
    task: `${pre}:task:${taskId}`,
    /** List: the task's history, one JSON envelope per event. */
    log: `${pre}:task:${taskId}:log`,
    /** List: steering messages not yet applied by a turn (only while there are some). */
    steering: `${pre}:task:${taskId}:steering`,
    /** List: the current wait's items (JSON), until the next turn's commit consumes them. */
    wait: `${pre}:task:${taskId}:wait`,
    /** Hash: wait item id → result JSON, received and not yet consumed by a turn. */
    results: `${pre}:task:${taskId}:results`,
    /** Hash: child task id → {"agent", "end"?}, every child the task spawned. */
    children: `${pre}:task:${taskId}:children`,
    prefix: pre,
    ...partitionKeys(ks, p)
  }
}

/** Keys of one batch (all in the partition of its id, like a task's; ADR 0008). */
export const batchKeys = (ks: Keyspace, batchId: string) => {
  const p = partitionOf(ks, batchId)
  const pre = partitionPrefix(ks, p)
  return {
    partition: p,
    /** Hash: id, agent, ownerId, status, total, the counts per end, createdAt, updatedAt, version. */
    batch: `${pre}:batch:${batchId}`,
    /** List: the batch's events (envelope JSON), oldest first. */
    log: `${pre}:batch:${batchId}:log`,
    /** Hash: task id → its position in the batch. */
    tasks: `${pre}:batch:${batchId}:tasks`,
    /** Hash: task id → how it ended, for the tasks that have. */
    ended: `${pre}:batch:${batchId}:ended`
  }
}

/** How long a batch's keys are kept once all its tasks have ended (seconds). */
export const BATCH_RETENTION_SECONDS = 7 * 86400

/** Namespace-wide keys (outside any partition slot; never in a script with partition keys). */
export const namespaceKeys = (ks: Keyspace) => ({
  /** Hash: namespace settings fixed at creation (partition count). */
  meta: `{${ks.namespace}}:meta`,
  /**
   * Sorted set: consumer name → time (ms) until which its running process vouches that it is alive;
   * refreshed by that process's maintenance, read by the dead-consumer sweep (src/Maintenance.ts) and the
   * live-worker gauges (projections/Gauges.ts). One key, in its own slot: never in a pipeline or script
   * with partition keys.
   */
  consumers: `{${ks.namespace}}:consumers`,
  /**
   * Sorted set: the consumer name of each process running a metrics projector → time (ms, Redis' clock) until
   * which it vouches that it is alive; written and read by the projectors only, to share the partitions'
   * projector leases out evenly (ADR 0015). One key, in its own slot.
   */
  projectors: `{${ks.namespace}}:projectors`,
  /** Pub/sub channel: cancel and steer notices for running workers. */
  control: `{${ks.namespace}}:control`,
  /**
   * Pub/sub channel: progress events turns emit (`ctx.emit`), JSON `{taskId, agent, ownerId, type, at, data}`,
   * for the live feeds; not stored anywhere (src/LiveEmit.ts, ADR 0010).
   */
  emit: `{${ks.namespace}}:emit`
})
