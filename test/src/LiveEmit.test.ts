/**
 * What turns emit (`ctx.emit`) reaches the live feed as its own kind of item, in order, with the task, agent,
 * owner and type; feeds that did not ask for emits, or filter them out, get none; nothing emitted lands in a
 * history or a partition log. Invalid, oversized and excessive emits are dropped with a warning and the turn
 * completes all the same. A streaming LLM agent's reply reaches the feed as a few coalesced text deltas.
 */
import { afterEach, expect, it, vi } from "vitest"
import { Continue, defineAgent, Done } from "../../src/Agent.ts"
import { Agent } from "../../src/agent/Agent.ts"
import { AgentWorkerConfig } from "../../src/Config.ts"
import type { LiveEmit, LiveEvent, LiveItem } from "../../src/LiveFeed.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { allPartitions, partitionKeys } from "../../streams/Keys.ts"
import { reply, startFakeModelServer } from "../support/FakeModelServer.ts"
import { freshKeyspace, rawClient, testRedisOptions } from "../support/TestRedis.ts"

const completed = (taskId: string, items: ReadonlyArray<LiveItem>) =>
  items.some((i) => i.kind === "task" && i.envelope.taskId === taskId && i.envelope.event._tag === "TaskCompleted")

const emitsOf = (items: ReadonlyArray<LiveItem>) => items.filter((i): i is LiveEmit => i.kind === "emit").map((i) => i.emit)

/** A started feed (its first `next()` subscribes and takes "now"; the subscription needs a round trip). */
const started = async (feed: AsyncGenerator<LiveItem>) => {
  const items: Array<LiveItem> = []
  let pending: Promise<IteratorResult<LiveItem>> | undefined = feed.next()
  await new Promise((r) => setTimeout(r, 200))
  /** Items until `until(items)` holds, then whatever else comes within `settleMs`. */
  const until = async (done: (items: ReadonlyArray<LiveItem>) => boolean, settleMs = 0) => {
    const end = Date.now() + 10_000
    let settleEnd: number | undefined
    for (;;) {
      if (settleEnd === undefined && done(items)) settleEnd = Date.now() + settleMs
      const deadline = settleEnd ?? end
      if (Date.now() >= deadline) break
      pending ??= feed.next()
      const next = await Promise.race([pending, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), deadline - Date.now()))])
      if (next === "timeout") break
      pending = undefined
      if (next.done === true) break
      items.push(next.value)
    }
    if (settleEnd === undefined) throw new Error(`timed out; got ${JSON.stringify(items)}`)
    return items
  }
  return { until }
}

afterEach(() => {
  vi.restoreAllMocks()
})

it("delivers a turn's emits to subscribers that ask for them, in order and filtered; histories hold none", async () => {
  const ks = freshKeyspace()
  const o = new Orchestrator({ ...testRedisOptions, ...ks })
  const agent = defineAgent<{ n: number }>({
    name: "emitter",
    turn: async (ctx) => {
      for (let i = 0; i < 5; i++) ctx.emit("progress", { turn: ctx.turn, i })
      ctx.emit("note", `turn ${ctx.turn} done`)
      return ctx.payload.n >= 1 ? Done("end") : Continue({ n: ctx.payload.n + 1 })
    }
  })
  o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
  const controller = new AbortController()
  const signal = controller.signal
  try {
    const all = await started(o.subscribe({ emits: true }, { signal }))
    const notes = await started(o.subscribe({ ownerId: "alice", emits: ["note"] }, { signal }))
    const plain = await started(o.subscribe({ ownerId: "alice" }, { signal }))
    const others = await started(o.subscribe({ ownerId: "bob", emits: true }, { signal }))
    await o.start()
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "alice", payload: { n: 0 } }))

    const expected = [0, 1].flatMap((turn) => [
      ...[0, 1, 2, 3, 4].map((i) => ["progress", { turn, i }]),
      ["note", `turn ${turn} done`]
    ])
    const got = await all.until((items) => completed(id, items) && emitsOf(items).length >= expected.length, 100)
    const emitted = emitsOf(got)
    expect(emitted.map((e) => [e.type, e.data])).toEqual(expected)
    expect(emitted.every((e) => e.taskId === id && e.agent === "emitter" && e.ownerId === "alice")).toBe(true)
    expect(emitted.every((e, k) => typeof e.at === "number" && (k === 0 || e.at >= emitted[k - 1]!.at))).toBe(true)
    // Emits are not history: no cursor on them, and the task events are exactly the history.
    expect(got.filter((i) => i.kind === "emit").every((i) => !("cursor" in i))).toBe(true)
    const history = await o.getTaskHistory(id)
    expect(history.map((e) => e.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed", "TurnCompleted", "TaskClaimed", "TaskCompleted"])
    expect(got.filter((i): i is LiveEvent => i.kind === "task").map((i) => i.envelope.id)).toEqual(history.map((e) => e.id))

    const noteItems = await notes.until((items) => completed(id, items) && emitsOf(items).length >= 2, 100)
    expect(emitsOf(noteItems).map((e) => e.data)).toEqual(["turn 0 done", "turn 1 done"])
    const plainItems = await plain.until((items) => completed(id, items), 100)
    expect(plainItems.every((i) => i.kind === "task")).toBe(true)

    // Bob's feed saw nothing of Alice's task; his own task's emits reach him.
    const bobs = await o.enqueueTask(agent, agent.createTask({ ownerId: "bob", payload: { n: 1 } }))
    const bobItems = await others.until((items) => completed(bobs, items) && emitsOf(items).length >= 6, 100)
    expect(bobItems.every((i) => (i.kind === "task" ? i.envelope.taskId : i.emit.taskId) === bobs)).toBe(true)
    expect(emitsOf(bobItems).map((e) => e.type)).toEqual(["progress", "progress", "progress", "progress", "progress", "note"])

    // Nothing emitted is stored: not in the history lists, not in the partition logs.
    const redis = rawClient()
    try {
      for (const p of allPartitions(ks)) {
        const entries = (await redis.xrange(partitionKeys(ks, p).events, "-", "+")) as Array<[string, Array<string>]>
        expect(entries.map(([, f]) => f[1]).join("\n")).not.toContain("turn 0 done")
      }
      expect(JSON.stringify(await o.getTaskHistory(bobs))).not.toContain("turn 1 done")
    } finally {
      redis.disconnect()
    }
  } finally {
    controller.abort()
    await o.stop()
  }
})

it("drops invalid, oversized and excessive emits with a warning; the turn completes", async () => {
  const logged: Array<string> = []
  const capture = (...args: Array<unknown>) => void logged.push(args.map(String).join(" "))
  vi.spyOn(console, "log").mockImplementation(capture)
  vi.spyOn(console, "error").mockImplementation(capture)
  const o = new Orchestrator({
    ...testRedisOptions,
    ...freshKeyspace(),
    emitLimits: { maxDataBytes: 1024, burst: 10, perTaskPerSecond: 1 }
  })
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  const agent = defineAgent({
    name: "sloppy",
    turn: async (ctx) => {
      ctx.emit("", 1) // invalid types: no token spent
      ctx.emit("x".repeat(65), 1)
      ctx.emit("has space", 1)
      ctx.emit(undefined as unknown as string, 1)
      ctx.emit("big", "é".repeat(600)) // 1202 bytes of JSON
      ctx.emit("cyclic", cyclic)
      ctx.emit("bigint", 10n)
      ctx.emit("empty", undefined) // delivered as null
      for (let i = 0; i < 20; i++) ctx.emit("ok", i) // 6 tokens left of the burst
      return Done("fine")
    }
  })
  o.registerRunner({ agent })
  const controller = new AbortController()
  try {
    const feed = await started(o.subscribe({ emits: true }, { signal: controller.signal }))
    await o.start()
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: {} }))
    // All that gets through, and a moment more: nothing else may follow.
    const items = await feed.until((items) => completed(id, items) && emitsOf(items).length >= 7, 200)
    expect(await o.getTaskStatus(id)).toBe("completed")
    expect((await o.getTaskData(id))?.output).toBe("fine")
    expect(emitsOf(items).map((e) => [e.type, e.data])).toEqual([["empty", null], ...[0, 1, 2, 3, 4, 5].map((i) => ["ok", i])])
    expect(logged.some((l) => l.includes("dropped an emitted event (invalidType)") && l.includes("the turn goes on"))).toBe(true)
    expect((await o.getTaskHistory(id)).map((e) => e.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed", "TaskCompleted"])
  } finally {
    controller.abort()
    await o.stop()
  }
})

it("streams an LLM agent's reply text to the feed as a few completion_delta events", async () => {
  const text = "Queues hum at dawn; workers wake to claim their turns; the log remembers."
  const model = await startFakeModelServer([reply.text(text)])
  const o = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
  const agent = new Agent({ name: "poet", model: "m", stream: true, client: { baseURL: model.baseURL, apiKey: "test" } })
  o.registerRunner({ agent })
  const controller = new AbortController()
  try {
    const feed = await started(o.subscribe({ emits: ["completion_delta", "completion"] }, { signal: controller.signal }))
    await o.start()
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "A haiku, please." } }))
    const items = await feed.until((items) => completed(id, items) && emitsOf(items).some((e) => e.type === "completion"), 100)
    const emitted = emitsOf(items)
    const deltas = emitted.filter((e) => e.type === "completion_delta").map((e) => (e.data as { text: string }).text)
    expect(deltas.join("")).toBe(text)
    // The server sent the reply as one chunk per few characters; the feed got far fewer messages.
    expect(deltas.length).toBeLessThan(5)
    expect(emitted.at(-1)?.type).toBe("completion")
    expect(model.requests[0]!.body.stream).toBe(true)
  } finally {
    controller.abort()
    await o.stop()
    await model.close()
  }
})

it("refuses bad emit limits", () => {
  expect(() => new Orchestrator({ emitLimits: { burst: 0 } })).toThrow("emitLimits.burst must be a positive number")
  expect(() => new Orchestrator({ emitLimits: { nope: 1 } as never })).toThrow("unknown field nope")
})
