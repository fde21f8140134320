/**
 * Pipelines that a Redis Cluster accepts: one per partition. Every key of a partition carries the hash tag
 * `{ns:p}`, so the commands of one partition all go to one slot; commands of several partitions may live
 * on several masters, and ioredis refuses (or Redis answers CROSSSLOT) a pipeline or MULTI that spans them.
 *
 * Commands that see one server only (SCAN, SCRIPT LOAD) must be sent to every master: `masters`
 * (streams/RedisClient.ts).
 *
 * Invariant: `perPartition` sends each partition's commands in their own pipeline (all at once, in
 * parallel) and returns the replies in the order of the items, so callers read them as from one pipeline.
 */
import type { RedisConnection } from "../../streams/RedisClient.ts"

type Pipeline = ReturnType<RedisConnection["pipeline"]>

export type Reply = readonly [Error | null, unknown]

/**
 * Adds one command per item to the pipeline of the item's partition, runs the pipelines (one round trip
 * each, concurrently) and returns the replies in item order.
 */
export const perPartition = async <T>(
  conn: RedisConnection,
  items: ReadonlyArray<T>,
  partitionOf: (item: T) => number,
  add: (pipeline: Pipeline, item: T) => void
): Promise<ReadonlyArray<Reply>> => {
  const groups = new Map<number, Array<number>>()
  items.forEach((item, i) => {
    const p = partitionOf(item)
    const group = groups.get(p)
    if (group === undefined) groups.set(p, [i])
    else group.push(i)
  })
  const replies = new Array<Reply>(items.length)
  await Promise.all([...groups.values()].map(async (indexes) => {
    const pipeline = conn.pipeline()
    for (const i of indexes) add(pipeline, items[i]!)
    const out = (await pipeline.exec()) ?? []
    indexes.forEach((i, j) => {
      replies[i] = out[j] ?? [new Error("missing pipeline reply"), null]
    })
  }))
  return replies
}
