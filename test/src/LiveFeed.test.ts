/**
 * Live updates: a subscriber sees a task's events in order, filtered by owner; a second subscriber that
 * resumes from a cursor taken midway sees exactly the remaining events, with no gap and no repeat; an
 * aborted subscription ends promptly whatever its connection is doing; events whose payload the partition log
 * leaves out (over 1 KB) arrive whole, as the history has them; the subscriptions of one orchestrator share one
 * reader of the logs and one subscription to the emit channel.
 */
import { expect, it } from "vitest"
import { Continue, defineAgent, Done } from "../../src/Agent.ts"
import { AgentWorkerConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { partitionKeys, partitionOf } from "../../streams/Keys.ts"
import { connectionsNamed, freshKeyspace, rawClient, testRedisOptions } from "../support/TestRedis.ts"
import type { LiveEvent } from "../../src/LiveFeed.ts"

const collect = async (iterable: AsyncIterable<LiveEvent>, until: (e: LiveEvent) => boolean) => {
  const out: Array<LiveEvent> = []
  for await (const e of iterable) {
    out.push(e)
    if (until(e)) break
  }
  return out
}

it("streams a task's events to its owner and resumes from a cursor without gaps", async () => {
  const o = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
  const agent = defineAgent<{ n: number }>({
    name: "steps",
    turn: (ctx) => Promise.resolve(ctx.payload.n >= 2 ? Done("end") : Continue({ n: ctx.payload.n + 1 }))
  })
  o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
  try {
    const controller = new AbortController()
    const mine = o.subscribe({ ownerId: "alice" }, { signal: controller.signal })
    const first = mine.next() // subscribes (positions at "now") before anything is enqueued
    await new Promise((r) => setTimeout(r, 200))
    await o.enqueueTask(agent, agent.createTask({ ownerId: "bob", payload: { n: 0 } }))
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "alice", payload: { n: 0 } }))
    await o.start()
    const head = (await first).value as LiveEvent
    const rest = await collect(mine, (e) => e.envelope.event._tag === "TaskCompleted")
    const all = [head, ...rest]
    expect(all.every((e) => e.envelope.taskId === id && e.envelope.ownerId === "alice")).toBe(true)
    const history = await o.getTaskHistory(id)
    expect(all.map((e) => e.envelope.id)).toEqual(history.map((e) => e.id))

    // Resume after the third event: the remaining ones exactly.
    const resumed = await collect(
      o.subscribe({ ownerId: "alice" }, { cursor: all[2]!.cursor }),
      (e) => e.envelope.event._tag === "TaskCompleted"
    )
    expect(resumed.map((e) => e.envelope.id)).toEqual(history.slice(3).map((e) => e.id))
    controller.abort()
  } finally {
    await o.stop()
  }
})

it("ends promptly when aborted, even while a read is pending and events keep coming", async () => {
  const o = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
  const agent = defineAgent({ name: "noise", turn: () => Promise.resolve(Done(null)) })
  let busy = true
  const writer = (async () => {
    while (busy) {
      await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: {} }))
      await new Promise((r) => setTimeout(r, 5))
    }
  })()
  try {
    for (const after of [0, 30, 120]) {
      const controller = new AbortController()
      const feed = o.subscribe({}, { signal: controller.signal })
      await feed.next()
      const pending = (async () => {
        for (;;) if ((await feed.next()).done) return
      })()
      setTimeout(() => controller.abort(), after)
      const t0 = Date.now()
      await pending
      expect(Date.now() - t0, `aborted after ${after} ms`).toBeLessThan(after + 1_000)
    }
  } finally {
    busy = false
    await writer
    await o.stop()
  }
})

it("delivers events with payloads over 1 KB whole, though the partition log holds them lean", async () => {
  const ks = freshKeyspace()
  const o = new Orchestrator({ ...testRedisOptions, ...ks })
  const big = "conversation ".repeat(400) // 5 KB: over the size past which the log leaves the payload out
  const agent = defineAgent<{ n: number; text: string }>({
    name: "talk",
    // The turn rewrites the text, so its checkpoint is the whole payload, not a delta of a few bytes (ADR 0018).
    turn: (ctx) =>
      Promise.resolve(ctx.payload.n >= 1 ? Done({ said: ctx.payload.text }) : Continue({ n: 1, text: ctx.payload.text.toUpperCase() }))
  })
  o.registerRunner({ agent })
  const conn = rawClient()
  try {
    const controller = new AbortController()
    const feed = o.subscribe({ ownerId: "carol" }, { signal: controller.signal })
    const first = feed.next()
    await new Promise((r) => setTimeout(r, 200))
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "carol", payload: { n: 0, text: big } }))
    await o.start()
    const events = [(await first).value as LiveEvent, ...await collect(feed, (e) => e.envelope.event._tag === "TaskCompleted")]
    controller.abort()
    // What the feed delivered is the history, field for field.
    expect(events.map((e) => e.envelope)).toEqual(await o.getTaskHistory(id))
    expect(events.map((e) => e.envelope.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed", "TurnCompleted", "TaskClaimed", "TaskCompleted"])
    // The log itself holds the payload-carrying events without their fields; the others whole.
    const log = (await conn.xrange(partitionKeys(ks, partitionOf(ks, id)).events, "-", "+")).map(([, f]) => f[1]!)
    const lean = log.filter((raw) => raw.endsWith(`,"lean":1}}`))
    expect(lean.map((raw) => JSON.parse(raw).event._tag)).toEqual(["TaskEnqueued", "TurnCompleted", "TaskCompleted"])
    expect(Math.max(...log.map((raw) => raw.length))).toBeLessThan(1024)
  } finally {
    conn.disconnect()
    await o.stop()
  }
})

it("the subscriptions of one orchestrator share one reader of the logs and one subscription to the emit channel", async () => {
  const ks = freshKeyspace()
  const o = new Orchestrator({ ...testRedisOptions, ...ks })
  const agent = defineAgent({ name: "shared", turn: () => Promise.resolve(Done(null)) })
  const conn = rawClient()
  const named = async (name: string) => (await connectionsNamed(conn, name)).length
  const controller = new AbortController()
  try {
    const feeds = [
      o.subscribe({}, { signal: controller.signal }),
      o.subscribe({ ownerId: "x", emits: true }, { signal: controller.signal }),
      o.subscribe({ emits: ["progress"] }, { signal: controller.signal })
    ]
    const firsts = feeds.map((f) => f.next())
    await new Promise((r) => setTimeout(r, 300))
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "x", payload: {} }))
    for (const first of firsts) expect(((await first).value as LiveEvent).envelope.taskId).toBe(id)
    const readers = await named(`factorial:subscribe-log:${ks.namespace}`)
    expect(readers).toBeGreaterThan(0) // on a Cluster: one connection per node it reads
    // The two that asked for emits share one subscription to the emit channel.
    expect(await named(`factorial:subscribe-emit:${ks.namespace}`)).toBe(1)
    // A second orchestrator's subscription has a reader of its own: shared per orchestrator.
    const other = new Orchestrator({ ...testRedisOptions, ...ks })
    const theirs = other.subscribe({}, { signal: controller.signal })
    const theirFirst = theirs.next()
    await new Promise((r) => setTimeout(r, 300))
    await o.enqueueTask(agent, agent.createTask({ ownerId: "x", payload: {} }))
    await theirFirst
    expect(await named(`factorial:subscribe-log:${ks.namespace}`)).toBe(2 * readers)
    controller.abort()
    await other.stop()
    const end = Date.now() + 3_000
    while ((await named(`factorial:subscribe-log:${ks.namespace}`)) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25))
    expect(await named(`factorial:subscribe-log:${ks.namespace}`)).toBe(0)
  } finally {
    controller.abort()
    conn.disconnect()
    await o.stop()
  }
})
