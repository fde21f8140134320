/**
 * Live gauges against a real Redis: task counts per status from the indexes, queue depth / in-flight /
 * oldest waiting per agent from the queue streams and their groups, and live workers from the groups'
 * consumers, summed over partitions: live while registered in `{ns}:consumers` (however long idle), not once
 * the registration lapsed, and, with no registration, while idle under the threshold.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Gauges } from "../../projections/Gauges.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { allPartitions, namespaceKeys, partitionKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"

/** Enqueues `alpha` tasks of agent alpha, then `beta` of agent beta, ids `<prefix>-<i>`, one ms apart. */
const enqueue = (store: TaskStore["Service"], prefix: string, alpha: number, beta: number) =>
  Effect.gen(function*() {
    const now = Date.now()
    for (let i = 0; i < alpha + beta; i++) {
      yield* store.execute({
        _tag: "Enqueue",
        taskId: `${prefix}-${i}`,
        agent: i < alpha ? "alpha" : "beta",
        ownerId: "o",
        payload: null,
        maxRetries: 0,
        now: now + i
      })
    }
  })

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

      yield* enqueue(store, "g", 5, 2)
      const before = yield* gauges.read()
      assert.strictEqual(before.tasksByStatus.queued, 7)
      assert.deepStrictEqual(before.queues.map((q) => [q.agent, q.waiting, q.inFlight]), [["alpha", 5, 0], ["beta", 2, 0]])
      assert.isNotNull(before.queues[0]!.oldestWaitingAt)
      assert.strictEqual(before.liveWorkers, 0)

      // Worker w1 takes one alpha entry from every partition that has one, and claims it.
      let taken = 0
      const claimed: Array<{ taskId: string; entryId: string; lease: number }> = []
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
          claimed.push({ taskId, entryId, lease: Number(fields[3]) + 1 })
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
      // Finished deliveries are acked and stay in the stream until maintenance trims it: neither in flight
      // nor waiting.
      for (const c of claimed) {
        yield* store.execute(
          { _tag: "Complete", taskId: c.taskId, lease: c.lease, output: null, steeringApplied: 0, now: Date.now() },
          { entryId: c.entryId, agent: "alpha" }
        )
      }
      const done = (yield* gauges.read()).queues.find((q) => q.agent === "alpha")!
      assert.deepStrictEqual([done.waiting, done.inFlight], [5 - taken, 0])
      // With a zero idle allowance nobody counts as live once a moment has passed.
      yield* Effect.sleep("20 millis")
      assert.strictEqual((yield* gauges.read({ liveWithinMs: 5 })).liveWorkers, 0)
    }).pipe(Effect.provide(Gauges.layer(ks).pipe(Layer.provideMerge(storeLayer(ks)))))
  })

  it.live("judges workers by their registration, and unregistered ones by idle time", () => {
    const ks = freshKeyspace(2)
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const redis = yield* RedisClient
      const gauges = yield* Gauges
      const registry = namespaceKeys(ks).consumers
      const now = Date.now()
      yield* enqueue(store, "r", 3, 3)
      // Consumers in every partition's group, as workers leave them (none reads anything here, so their
      // idle time only grows, as a live worker's does on Redis 7.0 while its queue is empty).
      const consumers = { alpha: ["idle-live", "stopped", "old", "maintenance-idle-live"], beta: ["stopped", "old"] }
      yield* redis.use("test consumers", async (c) => {
        for (const p of allPartitions(ks)) {
          for (const [agent, names] of Object.entries(consumers)) {
            const queue = partitionKeys(ks, p).queue(agent)
            await c.xgroup("CREATE", queue, agent, "0", "MKSTREAM").catch(() => undefined)
            for (const name of names) await c.call("XGROUP", "CREATECONSUMER", queue, agent, name)
          }
        }
        // `idle-live` (and its maintenance name) vouched for by a running process; `stopped`'s registration
        // has lapsed (a clean stop marks it so at once; a crash lets it run out); `old` never registered.
        await c.zadd(registry, now + 60_000, "idle-live", now + 60_000, "maintenance-idle-live", now - 1, "stopped")
      })
      const names = (ws: ReadonlyArray<{ readonly name: string }>) => ws.map((w) => w.name)
      const queue = (snapshot: typeof fresh, agent: string) => snapshot.queues.find((q) => q.agent === agent)!

      // Just created, `old` is live by the idle rule; `stopped` is not, however recently it was seen.
      const fresh = yield* gauges.read()
      assert.deepStrictEqual(names(queue(fresh, "alpha").workers), ["idle-live", "old", "stopped"])
      assert.deepStrictEqual(names(queue(fresh, "alpha").liveWorkers), ["idle-live", "old"])
      assert.deepStrictEqual(names(queue(fresh, "beta").liveWorkers), ["old"])
      assert.strictEqual(fresh.liveWorkers, 2)
      const idleLive = queue(fresh, "alpha").workers[0]!
      assert.strictEqual(idleLive.registeredUntil, now + 60_000)
      assert.strictEqual(queue(fresh, "alpha").workers[1]!.registeredUntil, null)

      // Idle longer than the threshold (5 ms here, 30 s on the dashboard): the registered worker is still
      // live, the unregistered one is not; beta's tasks wait with no live worker (the dashboard's warning).
      yield* Effect.sleep("30 millis")
      const later = yield* gauges.read({ liveWithinMs: 5 })
      assert.deepStrictEqual(queue(later, "alpha").liveWorkers.map((w) => [w.name, w.live]), [["idle-live", true]])
      assert.isAbove(queue(later, "alpha").liveWorkers[0]!.idleMs, 5)
      assert.deepStrictEqual(queue(later, "alpha").workers.map((w) => [w.name, w.live]), [
        ["idle-live", true],
        ["old", false],
        ["stopped", false]
      ])
      assert.deepStrictEqual(queue(later, "beta").liveWorkers, [])
      assert.isAbove(queue(later, "beta").waiting, 0)
      assert.strictEqual(later.liveWorkers, 1)

      // Its registration lapses (the process crashed and stopped renewing it): no longer live.
      yield* redis.use("lapse", (c) => c.zadd(registry, Date.now() - 1, "idle-live"))
      const lapsed = yield* gauges.read({ liveWithinMs: 5 })
      assert.deepStrictEqual(queue(lapsed, "alpha").liveWorkers, [])
      assert.strictEqual(lapsed.liveWorkers, 0)
    }).pipe(Effect.provide(Gauges.layer(ks).pipe(Layer.provideMerge(storeLayer(ks)))))
  })
})
