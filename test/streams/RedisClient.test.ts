/**
 * The shared command connection is auto-pipelined. On a Cluster, ioredis batches an auto-pipelined command
 * with the others for the master serving its first argument's slot; a script called with its key count
 * first (the metrics projector's commit) must therefore bypass auto-pipelining, or it joins another
 * master's batch and fails that batch, other partitions' commits with it. Runs on both test projects; only
 * the cluster one (4 partitions over 3 masters) could fail.
 */
import { afterAll, describe, expect, it } from "vitest"
import { partitionPrefix } from "../../streams/Keys.ts"
import { connect, makeConnection } from "../../streams/RedisClient.ts"
import { clusterNodes, freshKeyspace, onCluster, redisUrl } from "../support/TestRedis.ts"

const conn = makeConnection(onCluster ? { clusterNodes } : { url: redisUrl }, true)
const ks = freshKeyspace(8)
const keys = Array.from({ length: ks.partitions }, (_, p) => `${partitionPrefix(ks, p)}:pipelining-probe`)
afterAll(async () => {
  await Promise.all(keys.map((k) => conn.del(k)))
  conn.disconnect()
})

describe("the shared connection's auto-pipelining", () => {
  it("keeps a script called with its key count first out of other masters' batches", async () => {
    await connect(conn)
    conn.defineCommand("fx_metrics_apply", { lua: "return redis.call('INCR', KEYS[1])" })
    const apply = (conn as unknown as { fx_metrics_apply: (...a: ReadonlyArray<unknown>) => Promise<number> }).fx_metrics_apply
    // Issued in one tick: scripts on every partition's slot next to plain commands on the same slots.
    const replies = await Promise.all(keys.flatMap((k) => [apply.call(conn, 1, k), conn.incr(k)]))
    expect(replies).toHaveLength(2 * keys.length)
    expect(await Promise.all(keys.map((k) => conn.get(k)))).toEqual(keys.map(() => "2"))
  })
})
