/**
 * The status indexes' anchor (streams/Keys.ts INDEX_ANCHOR, ADR 0014): every index a task enters is a
 * skiplist from its first member on, even with a handful of tasks, and no reader sees the anchor — not a page
 * of the task list, not the gauges' counts, not verify.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Gauges } from "../../projections/Gauges.ts"
import { readTaskPage } from "../../projections/TaskIndex.ts"
import { verifyAll } from "../../src/audit/Verify.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { INDEX_ANCHOR, type Keyspace, partitionKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"

const encodingOf = (key: string) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    return yield* redis.use("object encoding", (c) => c.call("OBJECT", "ENCODING", key))
  })

describe("status index anchor", () => {
  it.live("keeps each index a skiplist from its first task on; pages, counts and verify leave it out", () => {
    const ks: Keyspace = freshKeyspace(1)
    const k = partitionKeys(ks, 0)
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const gauges = yield* Gauges
      const now = Date.now()
      for (let i = 0; i < 3; i++) {
        yield* store.execute({ _tag: "Enqueue", taskId: `a-${i}`, agent: "alpha", ownerId: "o", payload: null, maxRetries: 0, now: now + i })
      }
      assert.strictEqual(yield* encodingOf(k.index("queued")), "skiplist")
      const redis = yield* RedisClient
      assert.strictEqual(yield* redis.use("zscore", (c) => c.zscore(k.index("queued"), INDEX_ANCHOR)), "-inf")

      // Pages of 2 over 3 queued tasks: 2 then 1, and the last page says there is nothing after it.
      const first = yield* readTaskPage(ks, { status: "queued", limit: 2 })
      assert.deepStrictEqual(first.tasks.map((t) => t.id), ["a-2", "a-1"])
      assert.isNotNull(first.nextCursor)
      const second = yield* readTaskPage(ks, { status: "queued", limit: 2, cursor: { enteredAt: now + 1, id: "a-1" } })
      assert.deepStrictEqual([second.tasks.map((t) => t.id), second.scanned], [["a-0"], 1])
      assert.isNull(second.nextCursor)

      // Claimed and completed: the processing index keeps only its anchor, which no count includes.
      yield* redis.use("xgroup", (c) => c.xgroup("CREATE", k.queue("alpha"), "alpha", "0"))
      const { claims } = yield* store.claimNext({ agent: "alpha", worker: "w1", partition: 0, count: 1, now: now + 10 })
      const claim = claims[0]!
      assert.strictEqual(yield* encodingOf(k.index("processing")), "skiplist")
      assert.strictEqual((yield* gauges.read()).tasksByStatus.processing, 1)
      yield* store.execute(
        { _tag: "Complete", taskId: claim.taskId, lease: claim.lease + 1, output: null, steeringApplied: 0, now: now + 20 },
        { entryId: claim.entryId, agent: "alpha" }
      )
      const counts = (yield* gauges.read()).tasksByStatus
      assert.deepStrictEqual([counts.queued, counts.processing, counts.completed], [2, 0, 1])
      assert.strictEqual(yield* redis.use("zcard", (c) => c.zcard(k.index("processing"))), 1)
      const report = yield* verifyAll()
      assert.deepStrictEqual([report.checked, report.divergent], [3, 0])
    }).pipe(Effect.provide(Gauges.layer(ks).pipe(Layer.provideMerge(storeLayer(ks)))))
  })
})
