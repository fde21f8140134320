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
    /** Sorted set per status: task id → time it entered that status. */
    index: (status: string) => `${pre}:idx:${status}`,
    /** Set of agent names that have queues in this partition. */
    agents: `${pre}:agents`,
    /** Hash: projector name → last applied partition-log id. */
    checkpoints: `${pre}:checkpoints`,
    /** Hash: metrics buckets of this partition (written by the projector). */
    metrics: (agent: string, bucketSeconds: number) => `${pre}:metrics:${agent}:${bucketSeconds}`
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
    prefix: pre,
    ...partitionKeys(ks, p)
  }
}

/** Namespace-wide keys (outside any partition slot; read at start-up only). */
export const namespaceKeys = (ks: Keyspace) => ({
  /** Hash: namespace settings fixed at creation (partition count). */
  meta: `{${ks.namespace}}:meta`,
  /** Pub/sub channel: cancel and steer notices for running workers. */
  control: `{${ks.namespace}}:control`
})
