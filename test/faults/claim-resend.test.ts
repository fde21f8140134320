/**
 * Regression test for a lost task found by the connection-drop fault test (redis-outage.test.ts).
 *
 * ioredis resends, after a reconnect, every command whose reply it had not received
 * (`autoResendUnfulfilledCommands`, on by default). When a connection drops after Redis ran a worker's
 * claim but before the reply arrived, the claim runs twice: the first starts the lease, the second is
 * rejected (StaleLease). The rejection used to acknowledge and delete the queue entry — the very entry
 * that carries the live lease. The worker saw only the rejection, so it ran no turn and sent no
 * heartbeat, and without a pending entry maintenance (XAUTOCLAIM) could never recover the task: it
 * stayed `processing` forever.
 *
 * Proves: a repeated claim of the same delivery is still rejected (fencing unchanged), but leaves the
 * entry pending, so the task is recovered after the heartbeat timeout and then completes once.
 */
import { describe, expect, it } from "vitest"
import { Effect, Layer } from "effect"
import { maintainOnce } from "../../src/Maintenance.ts"
import { MaintenanceWorkerConfig } from "../../src/Config.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { partitionKeys } from "../../streams/Keys.ts"
import { ensureGroups } from "../../src/Worker.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"
import { deleteNamespace, sharedRedisUrl } from "./harness.ts"

describe("a claim resent after a lost reply", () => {
  it("is rejected, but keeps the live lease's entry pending so maintenance can recover the task", async () => {
    const keyspace = freshKeyspace()
    const queue = partitionKeys(keyspace, 0).queue("resend")
    const program = Effect.gen(function*() {
      const store = yield* TaskStore
      const { conn } = yield* RedisClient
      const now = Date.now()
      yield* store.execute({ _tag: "Enqueue", taskId: "t1", agent: "resend", ownerId: "o", payload: { n: 1 }, maxRetries: 3, now })
      yield* Effect.promise(() => ensureGroups(conn, [queue], "resend"))
      const read = (yield* Effect.promise(() =>
        conn.xreadgroup("GROUP", "resend", "w1", "COUNT", 1, "STREAMS", queue, ">")
      )) as Array<[string, Array<[string, Array<string>]>]>
      const [entryId] = read[0]![1][0]!
      const delivery = { entryId, agent: "resend" }
      const claim = { _tag: "Claim" as const, taskId: "t1", lease: 0, worker: "w1", now }

      // The claim ran, its reply was lost, and the client sent it again.
      const first = yield* store.execute(claim, delivery)
      expect(first.values.length).toBeGreaterThan(0)
      const again = yield* Effect.flip(store.execute(claim, delivery))
      expect(again._tag).toBe("StaleLease")

      // The entry of the live lease is still pending: nothing was acknowledged or deleted.
      const pending = (yield* Effect.promise(() => conn.xpending(queue, "resend"))) as [number, ...Array<unknown>]
      expect(pending[0]).toBe(1)

      // No heartbeat ever comes (the worker never started the turn): maintenance recovers it.
      yield* Effect.sleep("80 millis")
      const report = yield* maintainOnce({
        agents: [{ name: "resend", heartbeatTimeout: 0.05 }],
        config: new MaintenanceWorkerConfig({ interval: 1 }),
        workerId: "m1"
      })
      expect(report.recovered).toBe(1)
      const state = yield* store.getState("t1")
      expect(state).toMatchObject({ status: "queued", lease: 1, retries: 1 })

      // The requeued task is claimed again and completes, once.
      const next = (yield* Effect.promise(() =>
        conn.xreadgroup("GROUP", "resend", "w2", "COUNT", 1, "STREAMS", queue, ">")
      )) as Array<[string, Array<[string, Array<string>]>]>
      const [entry2, fields2] = next[0]![1][0]!
      expect(fields2).toEqual(["t", "t1", "l", "1"])
      yield* store.execute({ _tag: "Claim", taskId: "t1", lease: 1, worker: "w2", now }, { entryId: entry2, agent: "resend" })
      yield* store.execute({ _tag: "Complete", taskId: "t1", lease: 2, output: "ok", steeringApplied: 0, now }, {
        entryId: entry2,
        agent: "resend"
      })
      const history = yield* store.getHistory("t1")
      expect(history.map((e) => e.event._tag)).toEqual([
        "TaskEnqueued",
        "TaskClaimed",
        "TaskRecovered",
        "TaskClaimed",
        "TaskCompleted"
      ])
      // Nothing pending or waiting: both deliveries are acked (the entries stay until maintenance trims the queue).
      const [pendingCount] = (yield* Effect.promise(() => conn.xpending(queue, "resend"))) as [number]
      expect(pendingCount).toBe(0)
      const [group] = (yield* Effect.promise(() => conn.xinfo("GROUPS", queue))) as Array<Array<unknown>>
      expect(group![group!.indexOf("lag") + 1]).toBe(0)
    })
    try {
      await Effect.runPromise(program.pipe(Effect.provide(Layer.fresh(storeLayer(keyspace)))))
    } finally {
      await deleteNamespace(sharedRedisUrl, keyspace.namespace)
    }
  })

  it("a stale entry (not the one that started the live lease) is still acknowledged", async () => {
    const keyspace = freshKeyspace()
    const queue = partitionKeys(keyspace, 0).queue("resend")
    const program = Effect.gen(function*() {
      const store = yield* TaskStore
      const { conn } = yield* RedisClient
      const now = Date.now()
      yield* store.execute({ _tag: "Enqueue", taskId: "t2", agent: "resend", ownerId: "o", payload: null, maxRetries: 3, now })
      yield* Effect.promise(() => ensureGroups(conn, [queue], "resend"))
      // A duplicate entry for the same lease (as a replayed requeue would leave behind).
      yield* Effect.promise(() => conn.xadd(queue, "*", "t", "t2", "l", "0"))
      const read = (yield* Effect.promise(() =>
        conn.xreadgroup("GROUP", "resend", "w1", "COUNT", 2, "STREAMS", queue, ">")
      )) as Array<[string, Array<[string, Array<string>]>]>
      const [e1, e2] = read[0]![1].map(([id]) => id) as [string, string]
      yield* store.execute({ _tag: "Claim", taskId: "t2", lease: 0, worker: "w1", now }, { entryId: e1, agent: "resend" })
      const dup = yield* Effect.flip(
        store.execute({ _tag: "Claim", taskId: "t2", lease: 0, worker: "w1", now }, { entryId: e2, agent: "resend" })
      )
      expect(dup._tag).toBe("StaleLease")
      // Only the live lease's entry is still pending.
      const pending = (yield* Effect.promise(() => conn.xpending(queue, "resend", "-", "+", 10))) as Array<[string]>
      expect(pending.map(([id]) => id)).toEqual([e1])
    })
    try {
      await Effect.runPromise(program.pipe(Effect.provide(Layer.fresh(storeLayer(keyspace)))))
    } finally {
      await deleteNamespace(sharedRedisUrl, keyspace.namespace)
    }
  })
})
