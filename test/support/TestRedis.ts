/**
 * Test wiring: a real Redis at REDIS_URL (default 127.0.0.1:6379) and a fresh namespace per test file,
 * so test files run in parallel on one server without seeing each other's keys.
 */
import { randomUUID } from "node:crypto"
import { Layer } from "effect"
import type { Keyspace } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { TaskStore } from "../../src/TaskStore.ts"

export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

export const freshKeyspace = (partitions = 1): Keyspace => ({
  namespace: `t-${randomUUID().slice(0, 8)}`,
  partitions
})

export const redisLayer = RedisClient.layer({ url: redisUrl })

export const storeLayer = (keyspace: Keyspace) => TaskStore.layer(keyspace).pipe(Layer.provideMerge(redisLayer))
