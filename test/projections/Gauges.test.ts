/**
 * Live gauges against a real Redis: task counts per status from the indexes, queue depth / in-flight /
 * oldest waiting per agent from the queue streams and their groups, and live workers from the groups'
 * consumers, summed over partitions.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Gauges } from "../../projections/Gauges.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { allPartitions, partitionKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"

describe("Gauges", () => {
  it.live("reads status counts, queues and live workers", () => {
    const ks = freshKeyspace(2)
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const redis = yield* RedisClient
      const gauges = yield* Gauges

      const empty = yield* gauges.read()
      assert.strictEqual(empty.queues.length, 0)
      assert.strictEqual(empty.tasksByStatus.queued, 0)

      const now = Date.now()
      for (let i = 0; i < 7; i++) {
        yield* store.execute({
          _tag: "Enqueue",
          taskId: `g-${i}`,
          agent: i < 5 ? "alpha" : "beta",
          ownerId: "o",
          payload: null,
          maxRetries: 0,
          now: now + i
        })
      }
      const before = yield* gauges.read()
      assert.strictEqual(before.tasksByStatus.queued, 7)
      assert.deepStrictEqual(before.queues.map((q) => [q.agent, q.waiting, q.inFlight]), [["alpha", 5, 0], ["beta", 2, 0]])
      assert.isNotNull(before.queues[0]!.oldestWaitingAt)
      assert.strictEqual(before.liveWorkers, 0)

      // Worker w1 takes one alpha entry from every partition that has one, and claims it.
      let taken = 0
      for (const p of allPartitions(ks)) {
        const queue = partitionKeys(ks, p).queue("alpha")
        const entries = yield* redis.use("test worker read", async (c) => {
          await c.xgroup("CREATE", queue, "alpha", "0", "MKSTREAM").catch(() => undefined)
          const reply = (await c.xreadgroup("GROUP", "alpha", "w1", "COUNT", 1, "STREAMS", queue, ">")) as unknown as
            | Array<[string, Array<[string, Array<string>]>]>
            | null
          return reply?.[0]?.[1] ?? []
        })
        for (const [entryId, fields] of entries) {
          const taskId = fields[1]!
          yield* store.execute(
            { _tag: "Claim", taskId, lease: Number(fields[3]), worker: "w1", now: Date.now() },
            { entryId, agent: "alpha" }
          )
          taken++
        }
      }
      assert.isTrue(taken >= 1)
      const after = yield* gauges.read()
      assert.strictEqual(after.tasksByStatus.processing, taken)
      assert.strictEqual(after.tasksByStatus.queued, 7 - taken)
      const alpha = after.queues.find((q) => q.agent === "alpha")!
      assert.strictEqual(alpha.inFlight, taken)
      assert.strictEqual(alpha.waiting, 5 - taken)
      assert.deepStrictEqual(alpha.liveWorkers.map((w) => [w.name, w.pending]), [["w1", taken]])
      assert.strictEqual(after.liveWorkers, 1)
      if (alpha.waiting > 0) assert.isTrue(alpha.oldestWaitingAgeMs! >= 0)
      // With a zero idle allowance nobody counts as live once a moment has passed.
      yield* Effect.sleep("20 millis")
      assert.strictEqual((yield* gauges.read({ liveWithinMs: 5 })).liveWorkers, 0)
    }).pipe(Effect.provide(Gauges.layer(ks).pipe(Layer.provideMerge(storeLayer(ks)))))
  })
})
