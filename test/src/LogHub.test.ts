/**
 * The shared reader of the partition logs (src/LogHub.ts): feeds that follow one hub get exactly what feeds
 * reading the logs themselves get — the same events in the same order, filters applied, lean entries whole —
 * including a follower that falls further behind than the hub keeps (it reads on alone from its last cursor, then
 * follows the hub again) and one that resumes from a cursor, and when Redis drops the hub's connection. Redis
 * serves the followers one reader.
 */
import { Cluster } from "ioredis"
import { describe, expect, it } from "vitest"
import { defineAgent } from "../../src/Agent.ts"
import { type LiveEvent, type LiveFilter, type LiveItem, liveEvents } from "../../src/LiveFeed.ts"
import { type LogHub, makeLogHub } from "../../src/LogHub.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { allPartitions, type Keyspace, partitionOf } from "../../streams/Keys.ts"
import { clusterNodes, connectionsNamed, freshKeyspace, rawClient, testPartitions, testRedisOptions } from "../support/TestRedis.ts"

const redisOptions = "clusterNodes" in testRedisOptions ? { clusterNodes } : { url: testRedisOptions.redisUrl }
const agent = defineAgent<{ i: number; text: string }>({ name: "hubbed", turn: () => Promise.reject(new Error("not run")) })

/** Takes `count` events from a feed (then stops taking; the feed is ended by its signal). */
const take = async (feed: AsyncGenerator<LiveItem>, count: number) => {
  const out: Array<LiveEvent> = []
  while (out.length < count) {
    const next = await feed.next()
    if (next.done === true) throw new Error(`the feed ended after ${out.length} of ${count} events`)
    if (next.value.kind === "task") out.push(next.value)
  }
  return out
}

interface HubTest {
  readonly keyspace: Keyspace
  /** Enqueues (no workers run). */
  readonly o: Orchestrator
  readonly hub: LogHub
  /** Ends the test's feeds. */
  readonly signal: AbortSignal
  /** The hub's connection name. */
  readonly name: string
}

/** Runs `body` on a fresh namespace with a hub of `capacity`; returns the hub once the test's feeds ended. */
const withHub = async (
  capacity: { entries: number; bytes: number } | undefined,
  body: (t: HubTest) => Promise<void>,
  partitions = testPartitions
) => {
  const keyspace = freshKeyspace(partitions)
  const o = new Orchestrator({ ...testRedisOptions, ...keyspace })
  const name = `log-hub-${keyspace.namespace}`
  const hub = makeLogHub({ ...redisOptions, connectionName: name }, keyspace, capacity)
  const controller = new AbortController()
  try {
    await o.getTaskData("warm-up")
    await body({ keyspace, o, hub, signal: controller.signal, name })
  } finally {
    controller.abort()
    await o.stop()
  }
  return hub
}

describe("LogHub", () => {
  it("followers get exactly what feeds reading the logs themselves get, a slow one and a resumed one too", async () => {
    const hub = await withHub({ entries: 25, bytes: 1_000_000 }, async ({ keyspace, o, hub, signal }) => {
      const filters: ReadonlyArray<LiveFilter> = [{}, { ownerId: "a" }, { types: ["TaskEnqueued"], taskIds: ["t-3", "t-10", "t-40"] }]
      // Hub followers start at the hub's "now"; the feeds reading alone start at the same cursor.
      let start = ""
      const hubbed = filters.map((filter) =>
        liveEvents(redisOptions, keyspace, filter, { signal, logHub: hub, onStart: (c) => (start = c) })
      )
      const firsts = hubbed.map((f) => f.next()) // each attaches on its first next()
      await new Promise((r) => setTimeout(r, 300))
      expect(hub.followers()).toBe(filters.length)
      const alone = filters.map((filter) => liveEvents(redisOptions, keyspace, filter, { signal, cursor: start }))
      // A follower of the hub itself that takes nothing while the entries go by.
      const idle = (await hub.follow(start, () => true))!
      expect(idle.cursor).toBe(start)
      const slow = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, cursor: start })

      // 60 tasks, owners a and b in turn; every tenth payload is over 1 KB (lean in the log, whole in the history).
      const ids: Array<string> = []
      for (let i = 0; i < 60; i++) {
        const text = i % 10 === 3 ? "x".repeat(2_000) : "short"
        ids.push(await o.enqueueTask(agent, agent.createTask({ id: `t-${i}`, ownerId: i % 2 === 0 ? "a" : "b", payload: { i, text } })))
      }
      const expected = [60, 30, 3]
      const got = await Promise.all(hubbed.map(async (f, k) => {
        const first = (await firsts[k]!).value as LiveEvent
        return [first, ...(await take(f, expected[k]! - 1))]
      }))
      const reference = await Promise.all(alone.map((f, k) => take(f, expected[k]!)))
      // Order holds within a partition (readers may take the partitions' entries in another interleaving).
      const key = (events: ReadonlyArray<LiveEvent>) =>
        allPartitions(keyspace).map((p) => events.filter((e) => partitionOf(keyspace, e.envelope.taskId) === p).map((e) => JSON.stringify(e.envelope)))
      for (let k = 0; k < filters.length; k++) expect(key(got[k]!), JSON.stringify(filters[k])).toEqual(key(reference[k]!))
      expect(got[0]!.map((e) => e.envelope.taskId).sort()).toEqual([...ids].sort())
      // Lean entries arrive whole.
      expect((got[0]!.find((e) => e.envelope.taskId === "t-3")!.envelope.event as unknown as { payload: { text: string } }).payload.text).toHaveLength(2_000)

      // 60 entries went by and the hub keeps 25: the idle follower is told to read on alone.
      expect(await idle.next()).toBe("detached")
      // The slow feed read nothing while 60 entries went by: it reads on alone, no gap, no repeat, and follows the
      // hub again once it caught up.
      const late = await take(slow, 60)
      expect(key(late)).toEqual(key(reference[0]!))
      const more = await o.enqueueTask(agent, agent.createTask({ id: "t-more", ownerId: "a", payload: { i: 99, text: "" } }))
      const [after] = await take(slow, 1)
      expect(after!.envelope.taskId).toBe(more)
      expect(hub.followers()).toBe(filters.length + 1)

      // A feed resuming from a cursor the hub still holds follows it at once (the hub's order: the same events as
      // another follower, with the same cursors); from one it no longer holds, alone. The cursor comes from a
      // follower that kept up with the hub: one that fell behind (got[0] did, while the 60 went by) read on alone,
      // and its cursors need not be the hub's.
      const witness = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub })
      const witnessFirst = witness.next()
      await new Promise((r) => setTimeout(r, 300))
      for (let i = 0; i < 6; i++) {
        await o.enqueueTask(agent, agent.createTask({ id: `t-resume-${i}`, ownerId: i % 2 === 0 ? "a" : "b", payload: { i, text: "" } }))
      }
      const seen = [(await witnessFirst).value as LiveEvent, ...(await take(witness, 5))]
      const held = await hub.follow(seen[0]!.cursor, () => true)
      expect(held?.cursor).toBe(seen[0]!.cursor)
      held?.close()
      const resumed = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, cursor: seen[0]!.cursor })
      const same = (events: ReadonlyArray<LiveEvent>) => events.map((e) => [e.cursor, JSON.stringify(e.envelope)])
      expect(same(await take(resumed, 5))).toEqual(same(seen.slice(1)))
      expect(await hub.follow(got[0]![2]!.cursor, () => true)).toBeUndefined()
    })
    // Every follower gone: the hub stops reading.
    const end = Date.now() + 3_000
    while (hub.followers() > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
    expect(hub.followers()).toBe(0)
  })

  it("a follower that wants a lean entry no earlier follower wanted reads it whole, alone", async () => {
    await withHub(undefined, async ({ keyspace, o, hub, signal }) => {
      let start = ""
      const onlyB = liveEvents(redisOptions, keyspace, { ownerId: "b" }, { signal, logHub: hub, onStart: (c) => (start = c) })
      const first = onlyB.next()
      await new Promise((r) => setTimeout(r, 300))
      // a's large payload: lean in the log, and nobody following wants it, so the hub does not restore it.
      await o.enqueueTask(agent, agent.createTask({ id: "big-a", ownerId: "a", payload: { i: 1, text: "y".repeat(3_000) } }))
      await o.enqueueTask(agent, agent.createTask({ id: "small-b", ownerId: "b", payload: { i: 2, text: "" } }))
      expect(((await first).value as LiveEvent).envelope.taskId).toBe("small-b")
      const everyone = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, cursor: start })
      const [big, small] = await take(everyone, 2)
      expect(big!.envelope.taskId).toBe("big-a")
      expect((big!.envelope.event as unknown as { payload: { text: string } }).payload.text).toHaveLength(3_000)
      expect(small!.envelope.taskId).toBe("small-b")
    })
  })

  it("holds entries up to a size too: large payloads push the oldest out sooner", async () => {
    await withHub({ entries: 1_000, bytes: 10_000 }, async ({ keyspace, o, hub, signal }) => {
      let start = ""
      const everyone = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, onStart: (c) => (start = c) })
      const first = everyone.next()
      await new Promise((r) => setTimeout(r, 300))
      const idle = (await hub.follow(start, () => true))!
      // Six payloads of 3 KB, restored for the follower that wants every event: 18 KB, over the hub's 10 KB.
      for (let i = 0; i < 6; i++) await o.enqueueTask(agent, agent.createTask({ id: `big-${i}`, ownerId: "a", payload: { i, text: "z".repeat(3_000) } }))
      const got = [(await first).value as LiveEvent, ...(await take(everyone, 5))]
      expect(got.map((e) => (e.envelope.event as unknown as { payload: { text: string } }).payload.text.length)).toEqual(Array(6).fill(3_000))
      expect(await idle.next()).toBe("detached")
    })
  })

  it("Redis dropping the hub's connection costs its followers nothing: no gap, no repeat", async () => {
    await withHub(undefined, async ({ keyspace, o, hub, signal, name }) => {
      let start = ""
      const followers = [0, 1].map(() => liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, onStart: (c) => (start = c) }))
      const firsts = followers.map((f) => f.next())
      await new Promise((r) => setTimeout(r, 300))
      const alone = liveEvents(redisOptions, keyspace, {}, { signal, cursor: start })
      const write = async (from: number) => {
        for (let i = from; i < from + 15; i++) await o.enqueueTask(agent, agent.createTask({ id: `d-${i}`, ownerId: "a", payload: { i, text: "" } }))
      }
      await write(0)
      // Kill the hub's connections (on a Cluster, one per node it reads) while it blocks on its next read.
      const conn = rawClient()
      try {
        let killed = 0
        await conn.ping() // a Cluster client knows its nodes once connected
        for (const node of conn instanceof Cluster ? conn.nodes("master") : [conn]) {
          for (const line of await connectionsNamed(node, name)) {
            killed += Number(await node.call("CLIENT", "KILL", "ID", /^id=(\d+) /.exec(line)![1]!))
          }
        }
        expect(killed).toBeGreaterThan(0)
      } finally {
        conn.disconnect()
      }
      await write(15)
      const reference = await take(alone, 30)
      const key = (events: ReadonlyArray<LiveEvent>) => events.map((e) => e.envelope.id).sort()
      for (let k = 0; k < followers.length; k++) {
        const got = [(await firsts[k]!).value as LiveEvent, ...(await take(followers[k]!, 29))]
        expect(key(got)).toEqual(key(reference))
        expect(new Set(got.map((e) => e.envelope.taskId)).size).toBe(30)
      }
    })
  })

  it("a feed that read alone follows the hub again while writes go on, across partitions, without a repeat", async () => {
    const hub = await withHub({ entries: 20, bytes: 1_000_000 }, async ({ keyspace, o, hub, signal }) => {
      let start = ""
      const keeper = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, onStart: (c) => (start = c) })
      const kept = keeper.next()
      await new Promise((r) => setTimeout(r, 300))
      const enqueue = (i: number) => o.enqueueTask(agent, agent.createTask({ id: `w-${i}`, ownerId: "a", payload: { i, text: "" } }))
      for (let i = 0; i < 40; i++) await enqueue(i)
      void kept // the keeper follows the hub all along (it takes its entries into its own queue)
      // Resumed from a cursor the hub no longer holds (it keeps 20 entries): it reads alone, then, caught up at or
      // past the hub's head, follows it again, while a writer goes on.
      const resumed = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, cursor: start })
      let rejoined = false
      let written = 40
      const writer = (async () => {
        while (written < 400 && !rejoined) {
          await enqueue(written++)
          await new Promise((r) => setTimeout(r, 3))
          if (hub.followers() === 2) rejoined = true
        }
      })()
      const first = await take(resumed, 40)
      await writer
      const rest = await take(resumed, written - 40)
      const all = [...first, ...rest]
      expect(rejoined, `followers ${hub.followers()} after ${written} writes`).toBe(true)
      expect(all.map((e) => e.envelope.taskId).sort()).toEqual(Array.from({ length: written }, (_, i) => `w-${i}`).sort())
      // Its cursors are its own: resuming from one gives exactly the events after it.
      const k = Math.floor(all.length / 2)
      const again = await take(liveEvents(redisOptions, keyspace, {}, { signal, cursor: all[k]!.cursor }), all.length - k - 1)
      expect(again.map((e) => e.envelope.id).sort()).toEqual(all.slice(k + 1).map((e) => e.envelope.id).sort())
    }, Math.max(3, testPartitions))
    expect(hub.followers()).toBe(0)
  })

  it("attaches a cursor at or past its head in every partition, and the feed passes over what it has", async () => {
    await withHub(undefined, async ({ keyspace, o, hub, signal }) => {
      /** The `n`th task id (of the form p<p>-<i>) that falls into partition `p`. */
      const idIn = (p: number, n: number) => {
        for (let i = 0, found = -1; ; i++) if (partitionOf(keyspace, `p${p}-${i}`) === p && ++found === n) return `p${p}-${i}`
      }
      const enqueue = (id: string) => o.enqueueTask(agent, agent.createTask({ id, ownerId: "a", payload: { i: 0, text: "" } }))
      const keeper = (await hub.follow(undefined, () => true))! // keeps the reader running
      await enqueue(idIn(0, 0))
      expect(await keeper.next()).toHaveLength(1) // the hub has read it
      const now = (await hub.follow(undefined, () => true))!
      const head = now.cursor.split(",")
      now.close()
      // Past the head in partition 0 (a far future id), at it elsewhere: not held, attached at the head.
      const ahead = head.map((id, p) => (p === 0 ? "9999999999999-0" : id)).join(",")
      const attached = await hub.follow(ahead, () => true)
      expect(attached?.cursor).toBe(ahead)
      attached?.close()
      // Behind the head in a partition, and not held: not attached.
      expect(await hub.follow(head.map((id, p) => (p === 0 ? "0-1" : id)).join(","), () => true)).toBeUndefined()
      // A feed from the cursor ahead: partition 0's next event is at or before its cursor, passed over; partition 1's
      // arrives.
      const feed = liveEvents(redisOptions, keyspace, {}, { signal, logHub: hub, cursor: ahead })
      const first = feed.next()
      await new Promise((r) => setTimeout(r, 200))
      await enqueue(idIn(0, 1))
      await enqueue(idIn(1, 0))
      expect(((await first).value as LiveEvent).envelope.taskId).toBe(idIn(1, 0))
      keeper.close()
    }, Math.max(2, testPartitions))
  })
})
