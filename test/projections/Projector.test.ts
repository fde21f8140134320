/**
 * The metrics projector against a real Redis: any chunking of a log through the group gives the pure
 * fold; redelivery (same batch again, overlapping batches, a crash between commit and ack, entries held
 * by another consumer) changes nothing; projectors taking turns fold from the memory the other one stored; after real commands through TaskStore the live buckets equal a
 * rebuild from the log; the follow loop picks up new events and stops promptly when interrupted; reading an
 * envelope's opening gives the same fold as decoding it whole.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import fc from "fast-check"
import { fold, foldEnvelopes, type MetricsState } from "../../projections/MetricsBuckets.ts"
import { decodeEntryFacts, MetricsProjector, type ProjectorOptions } from "../../projections/Projector.ts"
import type { TaskCommand } from "../../projections/TaskDecider.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { BUCKET_INDEX_COMPLETE, type Keyspace, namespaceKeys, partitionKeys, partitionOf, PROJECTOR_GROUP } from "../../streams/Keys.ts"
import { masters, RedisClient } from "../../streams/RedisClient.ts"
import { decodeEnvelope, decodeLogFacts, type Envelope, type LogFacts, type TaskEvent } from "../../streams/TaskEvent.ts"
import { compareIds } from "../../streams/StreamId.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"
import { BASE_AT, canon, chunk, logArb } from "./fixtures.ts"

const metrics = { bucketSeconds: 60, retentionSeconds: 3_600 }

const layerFor = (ks: Keyspace, options: Partial<ProjectorOptions> = {}) =>
  MetricsProjector.layer(ks, { ...metrics, consumer: "c1", ...options }).pipe(Layer.provideMerge(storeLayer(ks)))

/** Writes envelopes to their partitions' logs as the scripts do (field `e`, JSON without the id); one pipeline per partition (a Cluster slot). */
const writeLog = (ks: Keyspace, log: ReadonlyArray<Envelope>) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    yield* redis.use("test xadd", async (c) => {
      for (let p = 0; p < ks.partitions; p++) {
        const pipeline = c.pipeline()
        for (const { id: _id, ...body } of log) {
          if (partitionOf(ks, body.taskId) === p) pipeline.xadd(partitionKeys(ks, p).events, "*", "e", JSON.stringify(body))
        }
        if (pipeline.length > 0) await pipeline.exec()
      }
    })
  })

/** A partition's log as stored (with real stream ids). */
const readLog = (ks: Keyspace, p: number) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    const raw = yield* redis.use("test xrange", (c) => c.xrange(partitionKeys(ks, p).events, "-", "+"))
    return yield* Effect.forEach(raw, ([id, fields]) => decodeEnvelope(fields[1]!, id))
  })

/** Forks the follow loop of another process's projector (its own connections and consumer name), with a short lease. */
const follower = (ks: Keyspace, consumer: string) =>
  Effect.gen(function*() {
    const projector = yield* MetricsProjector
    return yield* Effect.forkChild(Effect.scoped(projector.run))
  }).pipe(Effect.provide(MetricsProjector.layer(ks, { ...metrics, consumer, leaseMs: 400, blockMs: 50, pollIntervalMs: 20 }).pipe(Layer.provide(storeLayer(ks)))))

const liveState = (p: number) =>
  Effect.gen(function*() {
    const projector = yield* MetricsProjector
    return (yield* projector.readState(p)).state
  })

const assertSameState = (actual: MetricsState, expected: MetricsState, message?: string) =>
  assert.deepStrictEqual(canon(actual), canon(expected), message)

describe("MetricsProjector", () => {
  it.live("any chunking through the group gives the pure fold", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(logArb(50), fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 6 }), fc.boolean(), (log, sizes, twoPartitions) => {
          const ks = freshKeyspace(twoPartitions ? 2 : 1)
          return Effect.runPromise(
            Effect.gen(function*() {
              const projector = yield* MetricsProjector
              yield* writeLog(ks, log)
              for (let p = 0; p < ks.partitions; p++) {
                for (let i = 0;; i++) {
                  const r = yield* projector.poll(p, { count: sizes[i % sizes.length]! })
                  if (r.delivered === 0) break
                }
                const expected = fold(metrics, yield* readLog(ks, p))
                assertSameState(yield* liveState(p), expected)
              }
              const report = yield* projector.verify
              assert.isTrue(report.equal, JSON.stringify(report.differences))
            }).pipe(Effect.provide(layerFor(ks)))
          )
        }),
        { numRuns: 15 }
      )
    ))

  it("reading the envelope's opening gives the same fold as decoding it whole", () =>
    fc.assert(
      fc.property(logArb(60), fc.array(fc.constantFrom("plain", "escaped owner", "keys reordered"), { maxLength: 60 }), (log, forms) => {
        const decodeAll = (decode: (json: string) => ReturnType<typeof decodeLogFacts>) =>
          log.map(({ id: _id, ...body }, i): LogFacts => {
            const form = forms[i] ?? "plain"
            const written = form === "escaped owner" ? { ...body, ownerId: `o"\\${i}` } : body
            const { event, ...rest } = written
            const r = decode(JSON.stringify(form === "keys reordered" ? { event, ...rest } : written))
            if (r._tag === "Failure") throw new Error(r.failure.message)
            return r.success
          })
        assertSameState(foldEnvelopes(metrics, decodeAll(decodeEntryFacts)), foldEnvelopes(metrics, decodeAll(decodeLogFacts)))
      }),
      { numRuns: 300 }
    ))

  it.live("entries the scripts write are read from their opening; a corrupt one is still refused", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const redis = yield* RedisClient
      yield* store.execute({ _tag: "Enqueue", taskId: "open-1", agent: "alpha", ownerId: "o", payload: { big: "x".repeat(200) }, maxRetries: 1, now: 1_000 })
      yield* store.execute({ _tag: "Claim", taskId: "open-1", lease: 0, worker: "w1", now: 2_000 })
      const stored = yield* redis.use("test xrange", (c) => c.xrange(partitionKeys(ks, partitionOf(ks, "open-1")).events, "-", "+"))
      const facts = stored.map(([, fields]) => decodeEntryFacts(fields[1]!))
      // The full decoder keeps the claim's lease; read from the opening, a claim has its tag only.
      assert.deepStrictEqual(facts.map((r) => r._tag === "Success" ? r.success : r.failure._tag), [
        { at: 1_000, taskId: "open-1", agent: "alpha", event: { _tag: "TaskEnqueued" } },
        { at: 2_000, taskId: "open-1", agent: "alpha", event: { _tag: "TaskClaimed" } }
      ])
      const cut = stored[1]![1][1]!.slice(0, 120)
      assert.strictEqual(decodeEntryFacts(cut)._tag, "Failure", "a truncated envelope")
      assert.strictEqual(decodeEntryFacts(stored[1]![1][1]!.replace("TaskClaimed", "TaskNoSuchEvent"))._tag, "Failure")
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("commits after the server lost its scripts (a restart, SCRIPT FLUSH): the commit script is sent again", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const log = fc.sample(logArb(40, 20), { numRuns: 1, seed: 7 })[0]!
      const p = partitionOf(ks, log[0]!.taskId)
      const inPartition = log.filter((e) => partitionOf(ks, e.taskId) === p)
      const half = Math.ceil(inPartition.length / 2)
      yield* writeLog(ks, inPartition.slice(0, half))
      assert.strictEqual((yield* projector.poll(p)).applied, half)
      yield* redis.use("test script flush", () => Promise.all(masters(redis.conn).map((node) => node.script("FLUSH"))))
      yield* writeLog(ks, inPartition.slice(half))
      assert.strictEqual((yield* projector.poll(p)).applied, inPartition.length - half)
      assertSameState(yield* liveState(p), fold(metrics, yield* readLog(ks, p)))
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("redelivered and overlapping batches change nothing", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const log = fc.sample(logArb(60, 30), { numRuns: 1, seed: 7 })[0]!
      yield* writeLog(ks, log)
      const stored = yield* readLog(ks, 0)
      const [a, b, c] = chunk(stored, [10, 20])

      assert.strictEqual((yield* projector.apply(0, a!)).applied, 10)
      const afterA = yield* liveState(0)
      assertSameState(afterA, fold(metrics, a!))
      assert.strictEqual((yield* projector.apply(0, a!)).applied, 0, "the same batch again")
      assertSameState(yield* liveState(0), afterA)
      assert.strictEqual((yield* projector.apply(0, a!.slice(3))).applied, 0, "a tail of it")
      assertSameState(yield* liveState(0), afterA)

      // Overlapping: the last 5 of a and all of b; only b is new.
      assert.strictEqual((yield* projector.apply(0, [...a!.slice(5), ...b!])).applied, b!.length)
      assertSameState(yield* liveState(0), fold(metrics, [...a!, ...b!]))

      // A batch that does not start after the checkpoint: the gap is read from the log.
      const tail = c!.slice(4)
      assert.strictEqual((yield* projector.apply(0, tail)).applied, c!.length)
      assertSameState(yield* liveState(0), fold(metrics, stored))
      assert.isTrue((yield* projector.verify).equal)
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("concurrent projectors committing the same batches count every entry once", () => {
    const ks = freshKeyspace()
    const projectorOn = (consumer: string) =>
      MetricsProjector.layer(ks, { ...metrics, consumer }).pipe(Layer.provide(storeLayer(ks)))
    return Effect.gen(function*() {
      const log = fc.sample(logArb(80, 60), { numRuns: 1, seed: 5 })[0]!
      yield* writeLog(ks, log)
      const stored = yield* readLog(ks, 0)
      const cuts = [[5, 17, 30, 41, 55], [3, 9, 26, 38, 50], [12, 24, 36, 48]]
      // Three projectors, each on its own connection, apply the log in different chunkings at once.
      yield* Effect.forEach(
        cuts,
        (c, i) =>
          Effect.gen(function*() {
            const projector = yield* MetricsProjector
            for (const batch of chunk(stored, c)) yield* projector.apply(0, batch)
          }).pipe(Effect.provide(projectorOn(`racer-${i}`))),
        { concurrency: "unbounded", discard: true }
      )
      assertSameState(yield* liveState(0), fold(metrics, stored))
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("projectors taking turns on a task's batches, and an id enqueued again over stored memory, give the fold", () => {
    const ks = freshKeyspace()
    const envelope = (i: number, event: TaskEvent, taskId = "task-a"): Envelope => ({
      id: `${BASE_AT + i * 1_000}-0`,
      version: i + 1,
      at: BASE_AT + i * 1_000,
      taskId,
      agent: "alpha",
      ownerId: "o",
      event
    })
    const enqueued: TaskEvent = { _tag: "TaskEnqueued", payload: null, maxRetries: 2 }
    const claimed = (lease: number): TaskEvent => ({ _tag: "TaskClaimed", lease, worker: "w1" })
    const completed = (lease: number): TaskEvent => ({ _tag: "TaskCompleted", lease, output: "ok", steeringApplied: 0, steeringUnapplied: 0 })
    /** Applies a batch as another process's projector (its own memory of tasks, none to begin with). */
    const applyAs = (consumer: string, batch: ReadonlyArray<Envelope>) =>
      Effect.gen(function*() {
        return yield* (yield* MetricsProjector).apply(0, batch)
      }).pipe(Effect.provide(MetricsProjector.layer(ks, { ...metrics, consumer }).pipe(Layer.provide(storeLayer(ks)))))
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      // One task: enqueued, then claimed, its turn ended, claimed again and completed.
      yield* writeLog(ks, [
        envelope(0, enqueued),
        envelope(1, claimed(1)),
        envelope(2, { _tag: "TurnCompleted", lease: 1, turn: 1, payload: null, steeringApplied: 0 }),
        envelope(3, claimed(2)),
        envelope(4, completed(2))
      ])
      const stored = yield* readLog(ks, 0)

      // This projector folds the enqueue; another one folds the claim.
      yield* projector.apply(0, stored.slice(0, 1))
      yield* applyAs("other", stored.slice(1, 2))
      // The turn's end is folded here: from the claim the other projector stored, not from what this one last
      // wrote (the queue time: that would lose the run-time sample). A cache of the task memory (ADR 0016) has
      // to pass this.
      yield* projector.apply(0, stored.slice(2, 3))
      assertSameState(yield* liveState(0), fold(metrics, stored.slice(0, 3)))
      yield* applyAs("other", stored.slice(3, 4))
      yield* projector.apply(0, stored.slice(4))
      assertSameState(yield* liveState(0), fold(metrics, stored))

      // A task id enqueued again (its keys expired) while its first life's memory is still stored: the memory
      // is forgotten when the task ends.
      yield* writeLog(ks, [envelope(5, enqueued, "task-b"), envelope(6, claimed(1), "task-b"), envelope(7, enqueued, "task-b"), envelope(8, completed(1), "task-b")])
      const all = yield* readLog(ks, 0)
      yield* applyAs("other", all.slice(5, 7))
      yield* applyAs("third", all.slice(7))
      assertSameState(yield* liveState(0), fold(metrics, all))
      assert.isTrue((yield* projector.verify).equal)
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("a crash between commit and ack, and entries held by another consumer, are harmless", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const events = partitionKeys(ks, 0).events
      const log = fc.sample(logArb(40, 20), { numRuns: 1, seed: 3 })[0]!
      yield* writeLog(ks, log)
      yield* projector.catchUp() // creates the group and applies everything
      const done = yield* liveState(0)

      // More events; consumer c2 takes the first 5 and dies; c1 reads 5 and "crashes" after the commit.
      const more = fc.sample(logArb(30, 15), { numRuns: 1, seed: 11 })[0]!
        .map((e) => ({ ...e, at: e.at + 10_000_000 }))
      yield* writeLog(ks, more)
      const readAs = (consumer: string, count: number) =>
        redis.use("test xreadgroup", async (c) => {
          const reply = (await c.xreadgroup("GROUP", PROJECTOR_GROUP, consumer, "COUNT", count, "STREAMS", events, ">")) as unknown as
            | Array<[string, Array<[string, Array<string>]>]>
            | null
          return reply?.[0]?.[1] ?? []
        })
      yield* readAs("c2", 5)
      const mine = yield* readAs("c1", 5)
      const decoded = yield* Effect.forEach(mine, ([id, f]) => decodeEnvelope(f[1]!, id))
      const applied = yield* projector.apply(0, decoded) // commits c2's 5 (from the log) and these 5; no ack
      assert.strictEqual(applied.applied, 10)
      const afterCrash = yield* liveState(0)

      // Restart: c1's pending entries are redelivered and skipped; the rest is applied once.
      yield* projector.catchUp({ count: 4 })
      const all = yield* readLog(ks, 0)
      assertSameState(yield* liveState(0), fold(metrics, all))
      assert.notDeepEqual(canon(afterCrash), canon(done))
      const pending = (yield* redis.use("test xpending", (c) => c.xpending(events, PROJECTOR_GROUP))) as [number, ...Array<unknown>]
      assert.strictEqual(pending[0], 5, "only c2's entries stay pending")
      assert.isTrue((yield* projector.verify).equal)

      // Another projector's follow loop adopts c2's orphaned entries, skips them (applied) and acks them.
      const adopted = yield* Effect.gen(function*() {
        const other = yield* MetricsProjector
        const fiber = yield* Effect.forkChild(Effect.scoped(other.run))
        let left = 5
        for (let i = 0; i < 40 && left > 0; i++) {
          yield* Effect.sleep("50 millis")
          left = ((yield* redis.use("test xpending", (c) => c.xpending(events, PROJECTOR_GROUP))) as [number])[0]
        }
        yield* Fiber.interrupt(fiber)
        return left
      }).pipe(Effect.provide(MetricsProjector.layer(ks, { ...metrics, consumer: "c3", orphanIdleMs: 0, blockMs: 100 }).pipe(Layer.provide(storeLayer(ks)))))
      assert.strictEqual(adopted, 0)
      assertSameState(yield* liveState(0), fold(metrics, all))
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("entries a consumer read (NOACK) but never committed are folded once the log goes quiet", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const events = partitionKeys(ks, 0).events
      yield* writeLog(ks, fc.sample(logArb(30, 15), { numRuns: 1, seed: 5 })[0]!)
      yield* projector.catchUp()
      const before = yield* liveState(0)

      // New events, read the way a follow loop reads them (NOACK) by a consumer that dies before its commit:
      // they are pending nowhere, and no later entry comes to reveal the gap.
      yield* writeLog(ks, fc.sample(logArb(20, 10), { numRuns: 1, seed: 17 })[0]!.map((e) => ({ ...e, at: e.at + 10_000_000 })))
      const taken = yield* redis.use("test xreadgroup", async (c) => {
        const reply = (await c.call("XREADGROUP", "GROUP", PROJECTOR_GROUP, "crashed", "COUNT", 1000, "NOACK", "STREAMS", events, ">")) as
          | Array<[string, Array<unknown>]>
          | null
        return reply?.[0]?.[1].length ?? 0
      })
      assert.isAbove(taken, 0)
      const all = yield* readLog(ks, 0)
      assert.deepEqual(canon(yield* liveState(0)), canon(before), "nothing committed the crashed consumer's entries")

      // Another process's follow loop folds them: at its start, and after `orphanIdleMs` idle.
      yield* Effect.gen(function*() {
        const other = yield* MetricsProjector
        const fiber = yield* Effect.forkChild(Effect.scoped(other.run))
        const done = JSON.stringify(canon(fold(metrics, all)))
        for (let i = 0; i < 40 && JSON.stringify(canon(yield* liveState(0))) !== done; i++) yield* Effect.sleep("50 millis")
        yield* Fiber.interrupt(fiber)
      }).pipe(Effect.provide(MetricsProjector.layer(ks, { ...metrics, consumer: "c4", orphanIdleMs: 0, blockMs: 100 }).pipe(Layer.provide(storeLayer(ks)))))
      assertSameState(yield* liveState(0), fold(metrics, all))
      const pending = (yield* redis.use("test xpending", (c) => c.xpending(events, PROJECTOR_GROUP))) as [number]
      assert.strictEqual(pending[0], 0, "the follow loop's reads leave nothing pending")
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("one process at a time follows a partition's log; another takes over when it stops", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const redis = yield* RedisClient
      const events = partitionKeys(ks, 0).events
      const lease = partitionKeys(ks, 0).projectorLease
      const groupConsumers = redis.use("test xinfo", async (c) => {
        const reply = (await c.call("XINFO", "CONSUMERS", events, PROJECTOR_GROUP).catch(() => [])) as Array<Array<unknown>>
        return reply.map((flat) => String(flat[1])).sort()
      })
      const caughtUp = Effect.gen(function*() {
        const expected = JSON.stringify(canon(fold(metrics, yield* readLog(ks, 0))))
        for (let i = 0; i < 100 && JSON.stringify(canon(yield* liveState(0))) !== expected; i++) yield* Effect.sleep("20 millis")
        assertSameState(yield* liveState(0), fold(metrics, yield* readLog(ks, 0)))
      })

      const first = yield* follower(ks, "first")
      yield* Effect.sleep("50 millis")
      const second = yield* follower(ks, "second")
      yield* writeLog(ks, fc.sample(logArb(40, 20), { numRuns: 1, seed: 21 })[0]!)
      yield* caughtUp
      assert.strictEqual(yield* redis.use("test get", (c) => c.get(lease)), "first")
      assert.deepEqual(yield* groupConsumers, ["first"], "the standby never read the log")

      // The holder stops (its lease is given up), and the standby leads from the checkpoint on.
      yield* Fiber.interrupt(first)
      yield* writeLog(ks, fc.sample(logArb(40, 20), { numRuns: 1, seed: 22 })[0]!.map((e) => ({ ...e, at: e.at + 10_000_000 })))
      yield* caughtUp
      assert.strictEqual(yield* redis.use("test get", (c) => c.get(lease)), "second")
      yield* Fiber.interrupt(second)
      assert.isNull(yield* redis.use("test get", (c) => c.get(lease)), "a clean stop gives the lease up")
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("the partitions' leases are shared out among the live processes, and taken back when one stops", () => {
    const ks = freshKeyspace(4)
    return Effect.gen(function*() {
      const redis = yield* RedisClient
      const holders = redis.use("test get", (c) => Promise.all([0, 1, 2, 3].map((p) => c.get(partitionKeys(ks, p).projectorLease))))
      /** Waits (up to 5 s) until the holders, in partition order, satisfy `ok`; returns the last ones seen. */
      const until = (ok: (h: ReadonlyArray<string | null>) => boolean) =>
        Effect.gen(function*() {
          let h = yield* holders
          for (let i = 0; i < 250 && !ok(h); i++) h = yield* Effect.andThen(Effect.sleep("20 millis"), holders)
          return h
        })
      const count = (h: ReadonlyArray<string | null>, who: string) => h.filter((x) => x === who).length

      const first = yield* follower(ks, "first")
      assert.deepEqual(yield* until((h) => count(h, "first") === 4), ["first", "first", "first", "first"], "alone, it leads every partition")
      const second = yield* follower(ks, "second")
      const shared = yield* until((h) => count(h, "first") === 2 && count(h, "second") === 2)
      assert.deepEqual(shared, ["first", "first", "second", "second"], "two share them, the first giving up its highest")

      // Events in every partition while the leases are shared: each partition's leader folds them.
      const log = fc.sample(logArb(40, 40), { numRuns: 1, seed: 31 })[0]!.map((e, i) => ({ ...e, taskId: `spread-${i}` }))
      yield* writeLog(ks, log)
      for (let p = 0; p < 4; p++) {
        const expected = JSON.stringify(canon(fold(metrics, yield* readLog(ks, p))))
        for (let i = 0; i < 100 && JSON.stringify(canon(yield* liveState(p))) !== expected; i++) yield* Effect.sleep("20 millis")
        assertSameState(yield* liveState(p), fold(metrics, yield* readLog(ks, p)), `partition ${p}`)
      }

      yield* Fiber.interrupt(second)
      assert.strictEqual(count(yield* until((h) => count(h, "first") === 4), "first"), 4, "the one left takes them all back")
      yield* Fiber.interrupt(first)
      assert.deepEqual(yield* holders, [null, null, null, null])
      assert.strictEqual(yield* redis.use("test zcard", (c) => c.zcard(namespaceKeys(ks).projectors)), 0, "a clean stop leaves the count")
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("status: the age of the oldest entry not counted yet, over the partitions, and who projects", () => {
    const ks = freshKeyspace(2)
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      assert.deepEqual(yield* projector.status, { liveProjectors: 0, oldestUnprojectedAgeMs: null }, "empty logs: nothing to count")

      // Entries 30 s and 10 s old in partition 1, none in partition 0: the oldest decides, whatever the partition.
      const now = Date.now()
      const log = fc.sample(logArb(2, 2), { numRuns: 1, seed: 7 })[0]!
      yield* redis.use("test xadd", async (c) => {
        const events = partitionKeys(ks, 1).events
        for (const [i, ago] of [30_000, 10_000].entries()) {
          const { id: _id, ...body } = { ...log[i]!, taskId: `p1-${i}` }
          await c.xadd(events, `${now - ago}-0`, "e", JSON.stringify(body))
        }
      })
      const before = yield* projector.status
      assert.strictEqual(before.liveProjectors, 0)
      assert.isTrue(before.oldestUnprojectedAgeMs! >= 30_000 && before.oldestUnprojectedAgeMs! < 40_000, `${before.oldestUnprojectedAgeMs}`)

      // Once folded, nothing is behind; a running projector counts itself while it runs.
      yield* projector.catchUp()
      assert.strictEqual((yield* projector.status).oldestUnprojectedAgeMs, null)
      const running = yield* follower(ks, "elsewhere")
      for (let i = 0; i < 100 && (yield* projector.status).liveProjectors === 0; i++) yield* Effect.sleep("20 millis")
      assert.strictEqual((yield* projector.status).liveProjectors, 1)
      yield* Fiber.interrupt(running)
      assert.strictEqual((yield* projector.status).liveProjectors, 0, "a clean stop leaves the count")
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("the task memory hash is a hashtable from its first write, and its anchor is no task", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      yield* store.execute({ _tag: "Enqueue", taskId: "only", agent: "a", ownerId: "o", payload: 1, maxRetries: 0, now: Date.now() })
      yield* projector.catchUp()
      const open = partitionKeys(ks, 0).metrics(metrics.bucketSeconds).open
      // A listpack would make every lookup and write walk the hash (MEMORY_ANCHOR, streams/Keys.ts).
      assert.strictEqual(yield* redis.use("test object encoding", (c) => c.object("ENCODING", open)), "hashtable")
      const state = yield* projector.readState(0)
      assert.deepEqual([...state.state.open.keys()], ["only"])
      assert.isTrue((yield* projector.verify).equal)
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("lean log entries (payloads over 1 KB) fold as the whole envelopes in the histories do", () => {
    const ks = freshKeyspace(1)
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      let clock = Math.floor(Date.now() / 60_000) * 60_000 - 600_000
      const tick = (ms: number) => (clock += ms)
      const run = (command: TaskCommand) => store.execute(command)
      const big = (tag: string) => ({ tag, text: "x".repeat(2_000) })
      const claim = (taskId: string) =>
        Effect.flatMap(store.getState(taskId), (s) => run({ _tag: "Claim", taskId, lease: s!.lease, worker: "w1", now: tick(1_000) }))
      for (const taskId of ["waits", "small"]) {
        // "small" carries a small payload and result: only its large output leaves the log.
        const payload = taskId === "small" ? { taskId } : big(taskId)
        yield* run({ _tag: "Enqueue", taskId, agent: "alpha", ownerId: "o", payload, maxRetries: 1, now: tick(2_000) })
        yield* claim(taskId)
        // The turn waits for a result; the task resumes when it arrives.
        yield* run({ _tag: "Wait", taskId, lease: 1, payload, steeringApplied: 0, pending: [{ id: "r1", kind: "result" }], now: tick(3_000) })
        yield* run({ _tag: "DeliverResult", taskId, id: "r1", result: taskId === "small" ? 1 : big("result"), now: tick(4_000) })
        yield* claim(taskId)
        yield* run({ _tag: "Complete", taskId, lease: 2, output: big("output"), steeringApplied: 0, now: tick(5_000) })
      }
      yield* projector.catchUp()

      const raw = yield* redis.use("test xrange", (c) => c.xrange(partitionKeys(ks, 0).events, "-", "+"))
      const lean = raw.map(([, f]) => JSON.parse(f[1]!)).filter((e) => e.event.lean === 1)
      assert.deepEqual(
        lean.map((e) => `${e.taskId} ${e.event._tag}`),
        ["waits TaskEnqueued", "waits TaskWaiting", "waits ToolResultReceived", "waits TaskCompleted", "small TaskCompleted"]
      )
      // A lean entry keeps the one field the fold reads of it.
      assert.deepEqual(lean.filter((e) => e.event._tag === "TaskWaiting" || e.event._tag === "ToolResultReceived").map((e) => e.event.resumed), [false, true])

      const histories = (yield* Effect.forEach(["waits", "small"], (id) => store.getHistory(id))).flat()
      const fromHistories = fold(metrics, histories.sort((a, b) => compareIds(a.id, b.id)))
      assertSameState(yield* liveState(0), fromHistories, "live buckets against the fold of the whole envelopes")
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("live buckets after real commands equal a rebuild from the log", () => {
    const ks = freshKeyspace(2)
    return Effect.gen(function*() {
      const store = yield* TaskStore
      const projector = yield* MetricsProjector
      const t0 = Math.floor(Date.now() / 60_000) * 60_000 - 3_600_000
      let clock = t0
      const tick = (ms: number) => (clock += ms)
      const run = (command: TaskCommand) => store.execute(command)
      const lease = (taskId: string) => Effect.map(store.getState(taskId), (s) => s!.lease)
      const claim = (taskId: string) =>
        Effect.flatMap(lease(taskId), (l) => run({ _tag: "Claim", taskId, lease: l, worker: "w1", now: tick(1_500) }))

      const ids = Array.from({ length: 12 }, (_, i) => `job-${i}`)
      for (const [i, taskId] of ids.entries()) {
        yield* run({ _tag: "Enqueue", taskId, agent: i % 2 === 0 ? "alpha" : "beta", ownerId: "o", payload: { i }, maxRetries: 1, now: tick(7_000) })
      }
      for (const [i, taskId] of ids.entries()) {
        const now = () => tick(2_000)
        if (i % 6 === 4) {
          yield* run({ _tag: "Cancel", taskId, now: now() }) // cancelled while queued
          continue
        }
        yield* claim(taskId)
        const l = yield* lease(taskId)
        yield* run({ _tag: "Heartbeat", taskId, lease: l, worker: "w1", now: now() })
        switch (i % 6) {
          case 0:
            yield* run({ _tag: "Steer", taskId, messages: ["faster"], now: now() })
            yield* run({ _tag: "CompleteTurn", taskId, lease: l, payload: { turn: 1 }, steeringApplied: 1, now: now() })
            yield* claim(taskId)
            yield* run({ _tag: "Complete", taskId, lease: l + 1, output: "done", steeringApplied: 0, now: now() })
            yield* run({ _tag: "Expire", taskId, now: tick(90_000) })
            break
          case 1:
            yield* run({ _tag: "Fail", taskId, lease: l, error: { message: "flaky", kind: "timeout" }, retry: "retry", retryAt: 0, now: now() })
            yield* claim(taskId)
            yield* run({ _tag: "Complete", taskId, lease: l + 1, output: "ok", steeringApplied: 0, now: now() })
            break
          case 2:
            yield* run({ _tag: "Fail", taskId, lease: l, error: { message: "bad", kind: "fatal" }, retry: "fatal", retryAt: 0, now: now() })
            break
          case 3: {
            const at = now()
            yield* run({ _tag: "Fail", taskId, lease: l, error: { message: "429", kind: "rate" }, retry: "backoff", retryAt: at + 5_000, now: at })
            yield* run({ _tag: "WakeUp", taskId, now: tick(6_000) })
            yield* claim(taskId)
            yield* run({ _tag: "Cancel", taskId, now: now() }) // requested while running
            yield* run({ _tag: "Complete", taskId, lease: l + 1, output: "x", steeringApplied: 0, now: now() }) // → cancelled
            break
          }
          case 5:
            yield* run({ _tag: "Recover", taskId, lease: l, now: tick(60_000) }) // requeued
            yield* claim(taskId)
            yield* run({ _tag: "Recover", taskId, lease: l + 1, now: tick(60_000) }) // retries exhausted: failed
            break
        }
      }
      // Two tasks left unfinished: one queued, one running.
      yield* run({ _tag: "Enqueue", taskId: "open-1", agent: "alpha", ownerId: "o", payload: null, maxRetries: 0, now: tick(1_000) })
      yield* run({ _tag: "Enqueue", taskId: "open-2", agent: "beta", ownerId: "o", payload: null, maxRetries: 0, now: tick(1_000) })
      yield* claim("open-2")

      yield* projector.catchUp({ count: 3 })
      const verified = yield* projector.verify
      assert.isTrue(verified.equal, JSON.stringify(verified.differences, null, 1))

      // The fold of every task's own history gives the same buckets (heartbeats are not in histories).
      const histories = (yield* Effect.forEach([...ids, "open-1", "open-2"], (id) => store.getHistory(id))).flat()
      const byTime = histories.sort((a, b) => a.at - b.at || a.id.localeCompare(b.id))
      const live: Array<MetricsState> = []
      for (let p = 0; p < ks.partitions; p++) live.push(yield* liveState(p))
      const fromHistories = fold(metrics, byTime)
      const openLive = new Map(live.flatMap((s) => [...s.open]))
      assert.deepStrictEqual(canon({ buckets: new Map(), open: openLive }).open, canon(fromHistories).open)
      assert.deepStrictEqual([...openLive.keys()].sort(), ["open-1", "open-2"])

      // Rebuilt into a fresh key set: identical to the live set.
      const report = yield* projector.rebuild({ into: "rebuild" })
      assert.strictEqual(report.partitions.length, 2)
      for (let p = 0; p < ks.partitions; p++) {
        const rebuilt = yield* projector.readState(p, "rebuild")
        const liveStored = yield* projector.readState(p)
        assertSameState(rebuilt.state, liveStored.state, `partition ${p}`)
        assert.strictEqual(rebuilt.checkpoint, liveStored.checkpoint)
      }
      // Rebuilt into the live set: unchanged, and still verified.
      yield* projector.rebuild({ into: "live" })
      for (let p = 0; p < ks.partitions; p++) assertSameState(yield* liveState(p), live[p]!)
      assert.isTrue((yield* projector.verify).equal)

      // The timeline over all agents: the scenario's totals, with the histories' fold per bucket.
      const timeline = yield* projector.readTimeline({ from: t0, to: clock + 1 })
      const total = (name: keyof (typeof timeline)[number]["counters"]) =>
        timeline.reduce((n, point) => n + point.counters[name], 0)
      assert.strictEqual(total("enqueued"), 14)
      assert.strictEqual(total("completed"), 4) // i%6 = 0, 1 (two each)
      assert.strictEqual(total("failed"), 4) // fatal ×2, recovered-and-exhausted ×2
      assert.strictEqual(total("cancelled"), 4) // queued ×2, requested while running ×2
      assert.strictEqual(total("retried"), 4) // retry ×2, backoff ×2
      assert.strictEqual(total("recovered"), 4)
      assert.strictEqual(total("expired"), 2)
      assert.strictEqual(total("turns"), 2)
      assert.strictEqual(total("started"), 10 + 2 + 2 + 2 + 2 + 1)
      for (const point of timeline) {
        const expected = fromHistories.buckets.get(`__all__:${point.start / 1000}`) ?? {}
        assert.strictEqual(point.counters.started, expected.started ?? 0)
        assert.strictEqual(point.wait.count, expected["wait.n"] ?? 0)
        assert.strictEqual(point.run.totalMs, expected["run.ms"] ?? 0)
      }
      const busy = timeline.filter((p) => p.wait.count > 0)
      assert.isTrue(busy.length > 0 && busy.every((p) => p.wait.p50Ms !== null && p.wait.p99Ms! >= p.wait.p50Ms!))
      const alpha = yield* projector.readTimeline({ agent: "alpha", from: t0, to: clock + 1 })
      assert.strictEqual(alpha.reduce((n, p) => n + p.counters.enqueued, 0), 7)
      assert.strictEqual(alpha.length, timeline.length)
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("rebuilds the live set of a partition with thousands of open tasks", () => {
    // Their memory is written in one call: more values than Lua can unpack into one command (~8,000) once failed it.
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const log: Array<Envelope> = Array.from({ length: 5_000 }, (_, i) => ({
        id: "",
        version: 1,
        at: BASE_AT + i,
        taskId: `open-${i}`,
        agent: "a",
        ownerId: "o",
        event: { _tag: "TaskEnqueued", payload: null, maxRetries: 0 }
      }))
      yield* writeLog(ks, log)
      yield* projector.catchUp()
      const before: Array<MetricsState> = []
      for (let p = 0; p < ks.partitions; p++) before.push(yield* liveState(p))
      yield* projector.rebuild({ into: "live" })
      for (let p = 0; p < ks.partitions; p++) {
        assertSameState(yield* liveState(p), before[p]!, `partition ${p}`)
        assertSameState(yield* liveState(p), fold(metrics, yield* readLog(ks, p)), `partition ${p}`)
      }
      assert.strictEqual(before.reduce((n, s) => n + s.open.size, 0), 5_000)
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("a trimmed log still verifies its counters, and refuses to rebuild the live set", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const log = fc.sample(logArb(80, 60), { numRuns: 1, seed: 9 })[0]!
      yield* writeLog(ks, log)
      yield* projector.catchUp()
      yield* redis.use("test xtrim", (c) => c.xtrim(partitionKeys(ks, 0).events, "MAXLEN", 30))
      const report = yield* projector.verify
      assert.isTrue(report.equal, JSON.stringify(report.differences))
      const refused = yield* Effect.flip(projector.rebuild({ into: "live" }))
      assert.strictEqual(refused._tag, "LogTrimmed")
      // A fresh set holds only what the log still has: fewer counts than the live set, never more.
      yield* projector.rebuild({ into: "partial" })
      const partial = (yield* projector.readState(0, "partial")).state
      const live = yield* liveState(0)
      const total = (state: MetricsState) =>
        [...state.buckets].filter(([id]) => id.startsWith("__all__:")).reduce((n, [, b]) => n + (b.enqueued ?? 0) + (b.started ?? 0), 0)
      assert.isBelow(total(partial), total(live) + 1)
      assertSameState(partial, fold(metrics, yield* readLog(ks, 0)))
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("the bucket index lists exactly the set's bucket hashes; a set older than its index is indexed once", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const keys = partitionKeys(ks, 0).metrics(metrics.bucketSeconds, "live")
      /** The index (member → score) and the bucket hashes a SCAN finds, by id, with the second each expires. */
      const look = redis.use("test bucket index", async (c) => {
        const flat = await c.zrange(keys.bucketIndex, "0", "-1", "WITHSCORES")
        const index = new Map<string, string>()
        for (let i = 0; i < flat.length; i += 2) index.set(flat[i]!, flat[i + 1]!)
        const found: Array<string> = []
        let cursor = "0"
        do {
          const [next, batch] = await c.scan(cursor, "MATCH", keys.bucketPattern, "COUNT", 1000)
          found.push(...batch)
          cursor = next
        } while (cursor !== "0")
        const expires = new Map<string, number>()
        for (const k of found) expires.set(k.slice(keys.bucketPrefix.length), (await c.pexpiretime(k)) / 1000)
        return { index, expires, indexExpires: (await c.pexpiretime(keys.bucketIndex)) / 1000, now: Number((await c.time())[0]) }
      })
      const assertIndexed = (what: string) =>
        Effect.gen(function*() {
          const { index, expires, indexExpires, now } = yield* look
          assert.strictEqual(index.get(BUCKET_INDEX_COMPLETE), "inf", `${what}: marked complete`)
          assert.deepStrictEqual([...index.keys()].filter((m) => m !== BUCKET_INDEX_COMPLETE).sort(), [...expires.keys()].sort(), what)
          assert.isAbove(expires.size, 0, what)
          for (const [id, at] of expires) {
            const score = Number(index.get(id))
            // Whole seconds: never after the hash has expired, never a second or more before.
            assert.isTrue(score > at - 1 && score <= Math.ceil(at), `${what}: ${id} expires at ${at}, indexed ${score}`)
          }
          // The index outlives every bucket, and expires within a retention.
          assert.isAtLeast(indexExpires, Math.max(...expires.values()), what)
          assert.isAtMost(indexExpires, now + 1 + metrics.retentionSeconds, what)
        })

      const log = fc.sample(logArb(80, 60), { numRuns: 1, seed: 11 })[0]!
      yield* writeLog(ks, log.slice(0, 40))
      yield* projector.catchUp({ count: 7 })
      yield* assertIndexed("after the first commits")
      const before = yield* liveState(0)

      // A bucket the log does not produce: a rebuild of the live set empties it and drops it from the index.
      yield* redis.use("test stray bucket", (c) =>
        c.multi().hincrby(`${keys.bucketPrefix}stray:60`, "enqueued", 1).zadd(keys.bucketIndex, "+inf", "stray:60").exec())
      yield* projector.rebuild({ into: "live" })
      yield* assertIndexed("after a rebuild of the live set")
      assertSameState(yield* liveState(0), before)

      // A member whose hash has expired leaves the index with the next commit.
      yield* redis.use("test expired member", (c) => c.zadd(keys.bucketIndex, 1, "gone:60"))
      yield* writeLog(ks, log.slice(40))
      yield* projector.catchUp()
      yield* assertIndexed("after more commits")
      const after = yield* liveState(0)
      assertSameState(after, fold(metrics, yield* readLog(ks, 0)))

      // A set written before the index existed: read through one SCAN, which indexes it.
      yield* redis.use("test drop index", (c) => c.del(keys.bucketIndex))
      assertSameState(yield* liveState(0), after)
      yield* assertIndexed("indexed from a SCAN")
      assert.isTrue((yield* projector.verify).equal)

      // A bucket the index does not list (as a process of an earlier release writes it): verify reads the
      // buckets the log produces by name, so it still finds the live set equal to the fold.
      const [unlisted] = yield* redis.use("test unlist", (c) => c.zrange(keys.bucketIndex, "0", "0"))
      yield* redis.use("test unlist", (c) => c.zrem(keys.bucketIndex, unlisted!))
      assert.isFalse((yield* liveState(0)).buckets.has(unlisted!))
      const report = yield* projector.verify
      assert.isTrue(report.equal, JSON.stringify(report.differences))

      // A set with neither checkpoint nor index has no buckets, and reading it writes nothing.
      assertSameState((yield* projector.readState(0, "never")).state, { buckets: new Map(), open: new Map() })
      const never = partitionKeys(ks, 0).metrics(metrics.bucketSeconds, "never").bucketIndex
      assert.strictEqual(yield* redis.use("test exists", (c) => c.exists(never)), 0)
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("rejects reversed or oversized timeline ranges", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const reversed = yield* Effect.flip(projector.readTimeline({ from: 10, to: 0 }))
      assert.strictEqual(reversed._tag, "TimelineRangeInvalid")
      const long = yield* Effect.flip(projector.readTimeline({ from: 0, to: 60_000 * 20_000 }))
      assert.strictEqual(long._tag, "TimelineRangeInvalid")
      assert.deepStrictEqual(yield* projector.readTimeline({ from: 0, to: 0 }), [])
    }).pipe(Effect.provide(layerFor(ks)))
  })

  it.live("reads no bucket past its retention: ended more than the retention and a minute ago, it has expired", () => {
    const ks = freshKeyspace()
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const now = Date.now()
      const minute = Math.floor(now / 60_000) * 60
      const keys = partitionKeys(ks, 0).metrics(60)
      // Written without a TTL, as a bucket would still be there a while after its retention.
      const expired = minute - 15 * 60 // ended 14 min ago: past 10 min of retention, the bucket and a minute
      const kept = minute - 11 * 60 // ended 10 min ago
      yield* redis.use("test buckets", (c) =>
        c.multi().hset(keys.bucket("__all__", expired), "enqueued", 5).hset(keys.bucket("__all__", kept), "enqueued", 7).exec())
      const timeline = yield* projector.readTimeline({ from: (minute - 20 * 60) * 1000, to: now })
      assert.strictEqual(timeline.length, 21)
      const enqueued = (start: number) => timeline.find((point) => point.start === start * 1000)!.counters.enqueued
      assert.strictEqual(enqueued(expired), 0)
      assert.strictEqual(enqueued(kept), 7)
    }).pipe(Effect.provide(layerFor(ks, { retentionSeconds: 600 })))
  })

  it.live("a corrupt log entry stalls its partition only, which resumes by itself once the entry is gone", () => {
    const ks = freshKeyspace(2)
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const redis = yield* RedisClient
      const log = fc.sample(logArb(40, 30), { numRuns: 1, seed: 5 })[0]!
      const ends = (p: number) => redis.use("test log end", async (c) => {
        const [last] = await c.xrevrange(partitionKeys(ks, p).events, "+", "-", "COUNT", 1)
        return { last: last?.[0] ?? "", checkpoint: await c.hget(partitionKeys(ks, p).checkpoints, projector.checkpointField) }
      })
      const caughtUp = (p: number) => Effect.map(ends(p), ({ last, checkpoint }) => last !== "" && checkpoint === last)
      // Generous: under load the removal below can miss a try, and the next comes after 2, 4, 8 s.
      const waitUntil = (what: string, check: Effect.Effect<boolean, unknown>) =>
        Effect.gen(function*() {
          for (let i = 0; i < 400; i++) {
            if (yield* check) return
            yield* Effect.sleep("50 millis")
          }
          assert.fail(`timed out waiting until ${what}`)
        })
      const fiber = yield* Effect.forkChild(Effect.scoped(projector.run))
      // Partition 0's log gets a corrupt entry between good ones; partition 1's only good ones.
      yield* writeLog(ks, log.filter((e) => partitionOf(ks, e.taskId) === 0).slice(0, 5))
      const corrupt = yield* redis.use("test corrupt entry", (c) => c.xadd(partitionKeys(ks, 0).events, "*", "e", "{not json"))
      yield* writeLog(ks, log)
      yield* waitUntil("partition 1 is projected to its end", caughtUp(1))
      yield* Effect.sleep("300 millis")
      assert.isFalse(yield* caughtUp(0), "partition 0 stalls at the corrupt entry: never skipped")
      assert.isUndefined(fiber.pollUnsafe(), "the follow loop still runs")
      // The operator removes the entry: the partition resumes on its next try (a backoff of 1 s, then 2 s …).
      yield* redis.use("test xdel", (c) => c.xdel(partitionKeys(ks, 0).events, corrupt!))
      yield* waitUntil("partition 0 is projected to its end", caughtUp(0))
      yield* Fiber.interrupt(fiber)
      for (let p = 0; p < 2; p++) assertSameState(yield* liveState(p), fold(metrics, yield* readLog(ks, p)), `partition ${p}`)
    }).pipe(Effect.provide(layerFor(ks, { blockMs: 200, pollIntervalMs: 20 })))
  })

  it.live("the follow loop applies new events and stops promptly when interrupted", () => {
    const ks = freshKeyspace(2)
    return Effect.gen(function*() {
      const projector = yield* MetricsProjector
      const store = yield* TaskStore
      const fiber = yield* Effect.forkChild(Effect.scoped(projector.run))
      yield* Effect.sleep("100 millis")
      const now = Date.now()
      for (let i = 0; i < 6; i++) {
        yield* store.execute({ _tag: "Enqueue", taskId: `live-${i}`, agent: "alpha", ownerId: "o", payload: null, maxRetries: 0, now: now + i })
      }
      let enqueued = 0
      for (let attempt = 0; attempt < 50 && enqueued < 6; attempt++) {
        yield* Effect.sleep("50 millis")
        const timeline = yield* projector.readTimeline({ from: now, to: now + 10 })
        enqueued = timeline.reduce((n, p) => n + p.counters.enqueued, 0)
      }
      assert.strictEqual(enqueued, 6)
      const started = Date.now()
      yield* Fiber.interrupt(fiber)
      assert.isBelow(Date.now() - started, 1_000)
      assert.isTrue((yield* projector.verify).equal)
    }).pipe(Effect.provide(layerFor(ks, { blockMs: 5_000 })))
  })
})
