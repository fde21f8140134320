/**
 * Server-Sent Events over a real socket (the server listens on port 0): the `ready` event and its cursor,
 * task events as they are written, filters, heartbeat comments, resuming with Last-Event-ID without a gap
 * or a repeat, the stream's Redis connection closed when the client goes, bad input refused before
 * the stream starts, the cap on open streams, and a prompt server close; what running turns emit, as
 * `emit` events without ids, filtered, and not replayed on resume.
 */
import { connect } from "node:net"
import { Cluster } from "ioredis"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { Continue, defineAgent, Done } from "../../../src/Agent.ts"
import { ObservabilityConfig } from "../../../src/Config.ts"
import { Orchestrator } from "../../../src/Orchestrator.ts"
import { connectionsNamed, freshKeyspace, rawClient, testRedisOptions } from "../../support/TestRedis.ts"

const token = "another-test-token-0123"
const echo = defineAgent({ name: "echo", turn: () => Promise.resolve(Done(null)) })
const keyspace = freshKeyspace()
const orchestrator = new Orchestrator({ ...testRedisOptions, ...keyspace })
const app = orchestrator.createObservabilityApp(new ObservabilityConfig({ authToken: token, port: 0 }), {
  live: { heartbeatMs: 150 }
})
const redis = rawClient()
let base = ""

beforeAll(async () => {
  base = await app.listen({ host: "127.0.0.1", port: 0 })
})
afterAll(async () => {
  redis.disconnect()
  await app.close()
  await orchestrator.stop()
})

/** Every stream a test opened, closed after it (also when it failed). */
const opened: Array<() => Promise<void>> = []
afterEach(async () => {
  await Promise.all(opened.splice(0).map((close) => close()))
})

interface SseMessage {
  readonly event: string
  readonly id?: string
  readonly data: string
}

/** An open event stream: messages and comments as they arrive. */
const open = async (query = "", headers: Record<string, string> = { authorization: `Bearer ${token}` }, server = base) => {
  const controller = new AbortController()
  const res = await fetch(`${server}/observability/api/events${query}`, { headers, signal: controller.signal })
  const messages: Array<SseMessage> = []
  const comments: Array<string> = []
  let buffer = ""
  const pump = (async () => {
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buffer += value
      let end: number
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const m: { event: string; id?: string; data: Array<string> } = { event: "message", data: [] }
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) comments.push(line.slice(1).trim())
          else if (line.startsWith("event: ")) m.event = line.slice(7)
          else if (line.startsWith("id: ")) m.id = line.slice(4)
          else if (line.startsWith("data: ")) m.data.push(line.slice(6))
        }
        if (m.data.length > 0) messages.push({ event: m.event, ...(m.id !== undefined ? { id: m.id } : {}), data: m.data.join("\n") })
      }
    }
  })().catch(() => undefined)
  const waitFor = async (ok: () => boolean, what: string, ms = 10_000) => {
    const end = Date.now() + ms
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages)}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  const tasks = () => messages.filter((m) => m.event === "task").map((m) => ({ id: m.id!, envelope: JSON.parse(m.data) }))
  const emits = () => messages.filter((m) => m.event === "emit").map((m) => ({ id: m.id, emit: JSON.parse(m.data) }))
  const close = async () => {
    controller.abort()
    await pump
  }
  opened.push(close)
  return { res, messages, comments, tasks, emits, waitFor, close }
}

/** Streams reading the logs on their own connections. */
const sseClients = async () => (await connectionsNamed(redis, `factorial:sse:${keyspace.namespace}`)).length
/** The server's shared reader of the logs. */
const logReaders = async () => (await connectionsNamed(redis, `factorial:sse-log:${keyspace.namespace}`)).length

/** Connections of the server's shared emit subscription, on every node (a Cluster client prefixes their name). */
const emitSubscribers = async () => {
  const nodes = redis instanceof Cluster ? redis.nodes("master") : [redis]
  const lists = await Promise.all(nodes.map((n) => n.call("CLIENT", "LIST")))
  const name = new RegExp(`name=(ioredis-cluster\\(subscriber\\):)?factorial:sse-emit:${keyspace.namespace}( |$)`)
  return lists.flatMap((l) => String(l).split("\n")).filter((l) => name.test(l)).length
}

const enqueue = (ownerId: string) => orchestrator.enqueueTask(echo, echo.createTask({ ownerId, payload: {} }))

describe("GET /observability/api/events", () => {
  it("streams task events, heartbeats, and closes its Redis connection when the client goes", async () => {
    const stream = await open()
    expect(stream.res.status).toBe(200)
    expect(stream.res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8")
    await stream.waitFor(() => stream.messages.some((m) => m.event === "ready"), "ready")
    const ready = stream.messages[0]!
    expect(ready.id).toMatch(/^\d+-\d+(,\d+-\d+)*$/)
    expect(JSON.parse(ready.data)).toEqual({ cursor: ready.id })

    const a = await enqueue("u1")
    const b = await enqueue("u2")
    await stream.waitFor(() => stream.tasks().length >= 2, "two task events")
    // Order holds within a partition; tasks in different partitions may arrive either way round.
    expect(stream.tasks().map((t) => [t.envelope.taskId, t.envelope.event._tag]).sort()).toEqual(
      [[a, "TaskEnqueued"], [b, "TaskEnqueued"]].sort()
    )
    expect(stream.tasks().every((t) => /^\d+-\d+/.test(t.id))).toBe(true)
    await stream.waitFor(() => stream.comments.includes("ping"), "a heartbeat comment")

    // The server's streams share one reader of the logs and one subscription to the emit channel, open while any
    // stream is; a stream that follows the reader has no connection of its own.
    expect(await sseClients()).toBe(0)
    const readers = await logReaders()
    expect(readers).toBeGreaterThan(0) // on a Cluster: a connection per node
    expect(await emitSubscribers()).toBeGreaterThan(0) // on a Cluster: its node connection and its subscriber
    const more = [await open(), await open(), await open()]
    for (const m of more) await m.waitFor(() => m.messages.some((x) => x.event === "ready"), "ready")
    const c = await enqueue("u3")
    for (const m of [stream, ...more]) await m.waitFor(() => m.tasks().some((t) => t.envelope.taskId === c), "the event, on every stream")
    expect(await logReaders()).toBe(readers)
    expect(await sseClients()).toBe(0)
    for (const m of more) await m.close()
    await stream.close()
    const end = Date.now() + 5_000
    while ((await sseClients()) + (await emitSubscribers()) + (await logReaders()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25))
    expect(await sseClients()).toBe(0)
    expect(await emitSubscribers()).toBe(0)
    expect(await logReaders()).toBe(0)
  })

  it("resumes after Last-Event-ID without a gap or a repeat", async () => {
    const first = await open()
    await first.waitFor(() => first.messages.some((m) => m.event === "ready"), "ready")
    const a = await enqueue("r1")
    await first.waitFor(() => first.tasks().length === 1, "first event")
    const lastSeen = first.tasks()[0]!.id
    await first.close()

    // Written while nobody listens.
    const b = await enqueue("r2")
    const c = await enqueue("r3")
    const resumed = await open("", { authorization: `Bearer ${token}`, "last-event-id": lastSeen })
    await resumed.waitFor(() => resumed.tasks().length >= 2, "the missed events")
    expect(resumed.messages[0]).toMatchObject({ event: "ready", id: lastSeen })
    expect(resumed.tasks().map((t) => t.envelope.taskId).sort()).toEqual([b, c].sort())
    expect(resumed.tasks().map((t) => t.envelope.taskId)).not.toContain(a)
    // Nobody was following the shared reader, so the resumed stream read alone; caught up, it starts the reader
    // and follows it, giving its own connection back.
    const end = Date.now() + 5_000
    while (((await sseClients()) > 0 || (await logReaders()) === 0) && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
    expect(await sseClients()).toBe(0)
    expect(await logReaders()).toBeGreaterThan(0)
    const d = await enqueue("r4")
    await resumed.waitFor(() => resumed.tasks().some((t) => t.envelope.taskId === d), "an event through the shared reader")
    expect(resumed.tasks().map((t) => t.envelope.taskId).sort()).toEqual([b, c, d].sort())
    await resumed.close()

    // The same through the query (for clients that open a new EventSource themselves).
    const viaQuery = await open(`?lastEventId=${encodeURIComponent(lastSeen)}&token=${token}`, {})
    await viaQuery.waitFor(() => viaQuery.tasks().length >= 3, "the missed events again")
    expect(viaQuery.tasks().map((t) => t.envelope.taskId).sort()).toEqual([b, c, d].sort())
    await viaQuery.close()
  })

  it("filters by owner, task and event type", async () => {
    const byOwner = await open("?owner=only-me")
    const byType = await open("?types=TaskCancelled")
    await byOwner.waitFor(() => byOwner.messages.length > 0, "ready")
    await byType.waitFor(() => byType.messages.length > 0, "ready")
    await enqueue("someone-else")
    const mine = await enqueue("only-me")
    await orchestrator.cancelTask(mine)
    await byOwner.waitFor(() => byOwner.tasks().length >= 2, "my events")
    expect(byOwner.tasks().map((t) => [t.envelope.ownerId, t.envelope.event._tag])).toEqual([
      ["only-me", "TaskEnqueued"],
      ["only-me", "TaskCancelled"]
    ])
    await byType.waitFor(() => byType.tasks().length >= 1, "the cancel")
    expect(byType.tasks().map((t) => t.envelope.taskId)).toEqual([mine])
    await Promise.all([byOwner.close(), byType.close()])

    const byTask = await open(`?task=${mine}`, { authorization: `Bearer ${token}`, "last-event-id": byOwner.messages[0]!.id! })
    await byTask.waitFor(() => byTask.tasks().length >= 2, "the task's events")
    expect(byTask.tasks().every((t) => t.envelope.taskId === mine)).toBe(true)
    await byTask.close()
  })

  it("streams what running turns emit as `emit` events without ids, filtered, and not replayed on resume", async () => {
    const emitter = defineAgent<{ n: number }>({
      name: "emitter",
      turn: async (ctx) => {
        for (let i = 0; i < 3; i++) ctx.emit("step", { turn: ctx.turn, i })
        ctx.emit("note", `turn ${ctx.turn}`)
        return ctx.payload.n >= 1 ? Done("ok") : Continue({ n: ctx.payload.n + 1 })
      }
    })
    const workers = new Orchestrator({ ...testRedisOptions, ...keyspace })
    workers.registerRunner({ agent: emitter })
    try {
      const all = await open()
      const notes = await open("?emits=note")
      const none = await open("?emits=none&owner=emitting")
      const elsewhere = await open("?emitTasks=some-other-task")
      for (const s of [all, notes, none, elsewhere]) await s.waitFor(() => s.messages.some((m) => m.event === "ready"), "ready")
      await workers.start()
      const id = await workers.enqueueTask(emitter, emitter.createTask({ ownerId: "emitting", payload: { n: 0 } }))
      const done = (s: typeof all, emits: number) => () =>
        s.tasks().some((t) => t.envelope.taskId === id && t.envelope.event._tag === "TaskCompleted") && s.emits().length >= emits
      await all.waitFor(done(all, 8), "the task's events and emits")
      await notes.waitFor(done(notes, 2), "the notes")
      await none.waitFor(done(none, 0), "the task's events")
      await elsewhere.waitFor(done(elsewhere, 0), "the task's events")

      const expected = [0, 1].flatMap((turn) => [...[0, 1, 2].map((i) => ["step", { turn, i }]), ["note", `turn ${turn}`]])
      expect(all.emits().map((e) => [e.emit.type, e.emit.data])).toEqual(expected)
      expect(all.emits().every((e) => e.id === undefined)).toBe(true)
      expect(all.emits().every((e) => e.emit.taskId === id && e.emit.agent === "emitter" && e.emit.ownerId === "emitting")).toBe(true)
      expect(all.tasks().filter((t) => t.envelope.taskId === id).map((t) => t.envelope.event._tag)).toEqual(
        ["TaskEnqueued", "TaskClaimed", "TurnCompleted", "TaskClaimed", "TaskCompleted"]
      )
      expect(notes.emits().map((e) => e.emit.data)).toEqual(["turn 0", "turn 1"])
      expect(none.emits()).toEqual([])
      expect(none.tasks().length).toBe(5)
      // emitTasks narrows the emits only: every task event still comes.
      expect(elsewhere.emits()).toEqual([])
      expect(elsewhere.tasks().filter((t) => t.envelope.taskId === id).length).toBe(5)

      // A resumed stream replays the task events it missed, never the emits.
      const resumed = await open(`?task=${id}`, { authorization: `Bearer ${token}`, "last-event-id": all.messages[0]!.id! })
      await resumed.waitFor(() => resumed.tasks().length >= 5, "the replayed history")
      await new Promise((r) => setTimeout(r, 100))
      expect(resumed.emits()).toEqual([])
    } finally {
      await workers.stop()
    }
  })

  it("refuses bad input and a missing token before streaming", async () => {
    const bad = async (query: string, headers: Record<string, string> = {}) => {
      const res = await fetch(`${base}/observability/api/events${query}`, { headers: { authorization: `Bearer ${token}`, ...headers } })
      return { status: res.status, body: await res.json() as { error: { tag: string; message: string } } }
    }
    const badId = await bad("", { "last-event-id": "not-a-cursor" })
    expect(badId.status).toBe(400)
    expect(badId.body.error.message).toContain("invalid Last-Event-ID")
    expect((await bad("?types=TaskNope")).body.error.message).toContain("unknown event type \"TaskNope\"")
    expect((await bad("?agent=a%20b")).status).toBe(400)
    expect((await bad("?task={x}")).status).toBe(400)
    expect((await bad("?emits=a%20b")).body.error.message).toContain("invalid emitted event type \"a b\"")
    expect((await bad("?emitTasks={x}")).status).toBe(400)
    const noToken = await fetch(`${base}/observability/api/events`)
    expect(noToken.status).toBe(401)
  })

  it("refuses a stream beyond maxStreams with 503, and takes one again once a stream ends", async () => {
    const small = orchestrator.createObservabilityApp(new ObservabilityConfig({ port: 0 }), { live: { maxStreams: 2 } })
    const url = await small.listen({ host: "127.0.0.1", port: 0 })
    try {
      const streams = await Promise.all([open("", {}, url), open("", {}, url)])
      await Promise.all(streams.map((s) => s.waitFor(() => s.messages.length > 0, "ready")))
      const refused = await fetch(`${url}/observability/api/events`)
      expect(refused.status).toBe(503)
      expect(((await refused.json()) as { error: unknown }).error).toMatchObject({ tag: "TooManyStreams", message: expect.stringContaining("at most 2") })
      // Keep the feeds busy while a client leaves: the server must still notice and free the slot.
      let busy = true
      const writer = (async () => {
        while (busy) {
          await enqueue("busy")
          await new Promise((r) => setTimeout(r, 5))
        }
      })()
      await streams[0]!.waitFor(() => streams[0]!.tasks().length > 3, "busy events")
      await streams[0]!.close()
      const end = Date.now() + 5_000
      let again = await open("", {}, url)
      while (again.res.status === 503 && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 50))
        again = await open("", {}, url)
      }
      busy = false
      await writer
      expect(again.res.status).toBe(200)
    } finally {
      await Promise.all(opened.splice(0).map((close) => close()))
      await small.close()
    }
  })

  it("ends open streams when the server closes, without waiting on idle sockets", async () => {
    const other = orchestrator.createObservabilityApp(new ObservabilityConfig({ port: 0 }))
    const url = await other.listen({ host: "127.0.0.1", port: 0 })
    const res = await fetch(`${url}/observability/api/events`)
    const reader = res.body!.getReader()
    await reader.read()
    // A socket that never sends a request (like a browser's preconnect) must not hold up close().
    const idle = connect(Number(new URL(url).port), "127.0.0.1")
    await new Promise((r) => idle.once("connect", r))
    const idleClosed = new Promise((r) => idle.once("close", r))
    const t0 = Date.now()
    await other.close()
    expect(Date.now() - t0).toBeLessThan(3_000)
    for (;;) if ((await reader.read()).done) break
    await idleClosed
  })
})
