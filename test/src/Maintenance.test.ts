/**
 * Maintenance against a real Redis (standalone, and the cluster project's 4 partitions):
 * - expiry drains a backlog of finished tasks past their TTL that is many times `maxCleanupBatch` in one
 *   pass (within `expiryBudget`), and still keeps each status's TTL and the history's own TTL;
 */
import { describe, expect, it } from "vitest"
import { Effect, Layer } from "effect"
import type { TaskCommand } from "../../projections/TaskDecider.ts"
import { MaintenanceWorkerConfig, TaskTTLConfig } from "../../src/Config.ts"
import { maintainOnce } from "../../src/Maintenance.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { allPartitions, partitionKeys, taskKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"

describe("maintenance", () => {
  it("drains an expiry backlog bigger than maxCleanupBatch in one pass, keeping the TTLs", async () => {
    const keyspace = freshKeyspace()
    const batch = 10
    const program = Effect.gen(function*() {
      const store = yield* TaskStore
      const { conn } = yield* RedisClient
      const now = Date.now()
      // 30 × batch tasks cancelled a minute ago (past the 30 s TTL), 20 cancelled just now (not yet).
      const old = Array.from({ length: 30 * batch }, (_, i) => `old-${i}`)
      const recent = Array.from({ length: 20 }, (_, i) => `recent-${i}`)
      const setUp = (ids: ReadonlyArray<string>, at: number) =>
        Effect.gen(function*() {
          yield* store.executeMany(ids.map((taskId) => ({
            command: { _tag: "Enqueue", taskId, agent: "a", ownerId: "o", payload: null, maxRetries: 0, now: at } satisfies TaskCommand
          })))
          const cancels = yield* store.executeMany(ids.map((taskId) => ({
            command: { _tag: "Cancel", taskId, now: at } satisfies TaskCommand
          })))
          expect(cancels.every((c) => "values" in c)).toBe(true)
        })
      yield* setUp(old, now - 60_000)
      yield* setUp(recent, now)

      const config = (expiryBudget: number) =>
        new MaintenanceWorkerConfig({
          maxCleanupBatch: batch,
          expiryBudget,
          taskTtl: new TaskTTLConfig({ cancelledTtl: 30, historyTtl: 3600 })
        })
      const cancelledLeft = () =>
        Effect.promise(() =>
          Promise.all(allPartitions(keyspace).map((p) => conn.zcard(partitionKeys(keyspace, p).index("cancelled"))))
        ).pipe(Effect.map((counts) => counts.reduce((a, b) => a + b, 0)))

      // Without a budget a pass expires one batch per partition, as before.
      const first = yield* maintainOnce({ agents: [], config: config(0), workerId: "m1" })
      expect(first.expired).toBeLessThanOrEqual(batch * keyspace.partitions)
      expect(first.expired).toBeGreaterThan(0)

      // With one (generous, so a slow machine still finishes), one pass drains the rest.
      const second = yield* maintainOnce({ agents: [], config: config(60), workerId: "m1" })
      expect(first.expired + second.expired).toBe(old.length)
      expect(yield* cancelledLeft()).toBe(recent.length)

      for (const id of [old[0]!, old[old.length - 1]!]) {
        expect(yield* store.getStatus(id)).toBe("expired")
        const ttl = yield* Effect.promise(() => conn.ttl(taskKeys(keyspace, id).log))
        expect(ttl).toBeGreaterThan(0)
        expect(ttl).toBeLessThanOrEqual(3600)
      }
      for (const id of recent) expect(yield* store.getStatus(id)).toBe("cancelled")
    })
    await Effect.runPromise(program.pipe(Effect.provide(Layer.fresh(storeLayer(keyspace)))))
  })
})
