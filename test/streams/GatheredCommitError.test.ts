/**
 * A commit that raises an error inside a gathered call (`commits_next`, ADR 0013) fails alone: the commits
 * before and after it are applied and reported so, and the call's claims still go to their slots — as if each
 * commit had been its own call. The error here is a real one: the task's hash key holds a string (WRONGTYPE).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TaskStore } from "../../src/TaskStore.ts"
import { partitionKeys, taskKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { freshKeyspace, redisLayer } from "../support/TestRedis.ts"

describe("gathered commits", () => {
  it.live("a commit that raises an error fails alone; the others are applied and the claims delivered", () => {
    const ks = freshKeyspace(1)
    const k = partitionKeys(ks, 0)
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const redis = yield* RedisClient
      const now = Date.now()
      const ids = ["g-0", "g-1", "g-2", "g-3", "g-4", "g-5"]
      for (const [i, taskId] of ids.entries()) {
        yield* store.execute({ _tag: "Enqueue", taskId, agent: "alpha", ownerId: "o", payload: { i }, maxRetries: 0, now: now + i })
      }
      yield* redis.use("xgroup", (c) => c.xgroup("CREATE", k.queue("alpha"), "alpha", "0"))
      const request = { agent: "alpha", worker: "w1", partition: 0, count: 1, now: now + 10 }
      const { claims } = yield* store.claimNext({ ...request, count: 3 })
      assert.deepStrictEqual(claims.map((c) => c.taskId), ["g-0", "g-1", "g-2"])
      // g-1's hash becomes a string: any command on it fails with WRONGTYPE.
      yield* redis.use("corrupt", (c) => c.multi().del(taskKeys(ks, "g-1").task).set(taskKeys(ks, "g-1").task, "x").exec())

      // One call in flight per group: g-0's commit goes alone, g-1's and g-2's wait and go together.
      const complete = (c: (typeof claims)[number]) =>
        store.claimNext(request, {
          command: { _tag: "Complete", taskId: c.taskId, lease: c.lease + 1, output: { done: c.taskId }, steeringApplied: 0, now: now + 20 },
          delivery: { entryId: c.entryId, agent: "alpha" }
        })
      const results = yield* Effect.all(claims.map(complete), { concurrency: "unbounded" })

      assert.isTrue(results.every((r) => r.claimError === undefined), "the claims went through")
      const [first, failed, last] = results.map((r) => r.outcome)
      assert.isTrue(first !== undefined && "values" in first, "g-0 completed")
      const error = failed as { readonly _tag?: string; readonly message?: string }
      assert.strictEqual(error._tag, "RedisError")
      assert.match(String(error.message), /WRONGTYPE/)
      assert.isTrue(last !== undefined && "values" in last, "g-2 completed in the same call after g-1 failed")
      assert.deepStrictEqual(results.flatMap((r) => r.claims.map((c) => c.taskId)), ["g-3", "g-4", "g-5"])
      assert.strictEqual(yield* store.getStatus("g-0"), "completed")
      assert.strictEqual(yield* store.getStatus("g-2"), "completed")
    }).pipe(Effect.provide(TaskStore.layer(ks, { fusedCallsInFlight: 1 }).pipe(Layer.provideMerge(redisLayer))))
  })
})
