/**
 * Test wiring: a real Redis at REDIS_URL (default 127.0.0.1:6379) and a fresh namespace per test file,
 * so test files run in parallel on one server without seeing each other's keys.
 */
import { randomUUID } from "node:crypto"
import { Layer } from "effect"
import type { Keyspace } from "../../streams/Keys.ts"
import { makeConnection, RedisClient, type RedisConnection } from "../../streams/RedisClient.ts"
import { Cluster } from "ioredis"
import { TaskStore } from "../../src/TaskStore.ts"

export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

/** Partitions the integration tests use (4 on the cluster project, so keys spread over the masters). */
export const testPartitions = Number(process.env.TEST_PARTITIONS ?? 1)

export const freshKeyspace = (partitions = testPartitions): Keyspace => ({
  namespace: `t-${randomUUID().slice(0, 8)}`,
  partitions
})

/** Seed nodes of a Redis Cluster (REDIS_CLUSTER_NODES="h:p,h:p,…"): when set, tests run against the cluster. */
export const clusterNodes = (process.env.REDIS_CLUSTER_NODES ?? "").split(",").filter((s) => s !== "").map((s) => {
  const [host, port] = s.split(":")
  return { host: host!, port: Number(port) }
})
export const onCluster = clusterNodes.length > 0

/** Orchestrator options that reach the test Redis (standalone or cluster). */
export const testRedisOptions = onCluster ? { clusterNodes } : { redisUrl }

export const redisLayer = RedisClient.layer(onCluster ? { clusterNodes } : { url: redisUrl })

export const storeLayer = (keyspace: Keyspace) => TaskStore.layer(keyspace).pipe(Layer.provideMerge(redisLayer))

/** A plain client of the test Redis (connects on first command). */
export const rawClient = (): RedisConnection => {
  const conn = makeConnection(onCluster ? { clusterNodes } : { url: redisUrl })
  conn.on("error", () => {})
  return conn
}

/** The lines of CLIENT LIST on every master whose connection is named `name` (ids and names, for tests). */
export const connectionsNamed = async (conn: RedisConnection, name: string): Promise<Array<string>> => {
  await conn.ping() // a Cluster client knows its nodes once connected
  const nodes = conn instanceof Cluster ? conn.nodes("master") : [conn]
  const lists = await Promise.all(nodes.map((n) => n.call("CLIENT", "LIST")))
  return lists.flatMap((l) => String(l).split("\n")).filter((l) => / name=(\S+)/.exec(l)?.[1] === name)
}

/** KEYS on every master: for tests only (O(keys)). */
export const keysMatching = async (conn: RedisConnection, pattern: string): Promise<Array<string>> => {
  const nodes = conn instanceof Cluster ? conn.nodes("master") : [conn]
  return (await Promise.all(nodes.map((n) => n.keys(pattern)))).flat()
}
