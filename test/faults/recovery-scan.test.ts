/**
 * Regression test: crash recovery must reach a dead lease however many live leases sit before it.
 *
 * XAUTOCLAIM (Redis 7) examines at most COUNT × 10 pending entries per call and returns a cursor to
 * continue from. Maintenance used to start every pass at 0-0 and ignore that cursor. So with more than
 * `maxCleanupBatch` × 10 (default 1,000) live, heartbeating turns of an agent in a partition queued
 * before a dead one, the dead lease was never examined: its task stayed `processing` forever.
 *
 * Proves: with 1,000 live leases ahead of it (maxCleanupBatch 100), a dead lease is recovered in one
 * maintenance pass, and none of the live ones is touched.
 */
import { describe, expect, it } from "vitest"
import { Effect, Layer } from "effect"
import type { TaskCommand } from "../../projections/TaskDecider.ts"
import { MaintenanceWorkerConfig } from "../../src/Config.ts"
import { maintainOnce } from "../../src/Maintenance.ts"
import { TaskStore, type Delivery } from "../../src/TaskStore.ts"
import { ensureGroups } from "../../src/Worker.ts"
import { partitionKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"
import { deleteNamespace, sharedRedisUrl } from "./harness.ts"

const LIVE = 1_000

describe("recovery behind many live leases", () => {
  it("finds a dead lease queued after more than maxCleanupBatch × 10 live ones", async () => {
    const keyspace = freshKeyspace()
    const agent = "scan"
    const queue = partitionKeys(keyspace, 0).queue(agent)
    const program = Effect.gen(function*() {
      const store = yield* TaskStore
      const { conn } = yield* RedisClient
      const now = Date.now()
      // LIVE tasks first, the one whose worker dies last: its entry is at the end of the pending list.
      const ids = [...Array.from({ length: LIVE }, (_, i) => `live-${i}`), "dead"]
      yield* store.executeMany(ids.map((taskId) => ({
        command: { _tag: "Enqueue", taskId, agent, ownerId: "o", payload: null, maxRetries: 3, now } satisfies TaskCommand
      })))
      yield* Effect.promise(() => ensureGroups(conn, [queue], agent))
      const read = (yield* Effect.promise(() =>
        conn.xreadgroup("GROUP", agent, "w1", "COUNT", LIVE + 1, "STREAMS", queue, ">")
      )) as Array<[string, Array<[string, Array<string>]>]>
      const deliveries = new Map<string, Delivery>(read[0]![1].map(([entryId, fields]) => [fields[1]!, { entryId, agent }]))
      expect(deliveries.size).toBe(LIVE + 1)
      const claims = yield* store.executeMany(ids.map((taskId) => ({
        command: { _tag: "Claim", taskId, lease: 0, worker: "w1", now } satisfies TaskCommand,
        delivery: deliveries.get(taskId)!
      })))
      expect(claims.every((c) => "values" in c)).toBe(true)

      // Time passes; the live turns heartbeat, the dead one does not.
      yield* Effect.sleep("1500 millis")
      const beats = yield* store.executeMany(ids.slice(0, LIVE).map((taskId) => ({
        command: { _tag: "Heartbeat", taskId, lease: 1, worker: "w1", now: Date.now() } satisfies TaskCommand,
        delivery: deliveries.get(taskId)!
      })))
      expect(beats.every((b) => "values" in b)).toBe(true)

      const report = yield* maintainOnce({
        agents: [{ name: agent, heartbeatTimeout: 1 }],
        config: new MaintenanceWorkerConfig({ maxCleanupBatch: 100 }),
        workerId: "m1"
      })
      expect(report.recovered).toBe(1)
      expect(yield* store.getState("dead")).toMatchObject({ status: "queued", retries: 1 })
      expect((yield* store.getHistory("dead")).map((e) => e.event._tag)).toContain("TaskRecovered")
      expect(yield* store.getState("live-0")).toMatchObject({ status: "processing", lease: 1 })
      expect(yield* store.getState(`live-${LIVE - 1}`)).toMatchObject({ status: "processing", lease: 1 })
    })
    try {
      await Effect.runPromise(program.pipe(Effect.provide(Layer.fresh(storeLayer(keyspace)))))
    } finally {
      await deleteNamespace(sharedRedisUrl, keyspace.namespace)
    }
  }, 30_000)
})
