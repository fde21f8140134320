/**
 * `GET /observability/api/events`: the live feed (`src/LiveFeed.ts`) as Server-Sent Events.
 *
 * Protocol: first a `ready` event whose id is the starting cursor, then one `task` event per envelope
 * (`id:` = the feed's cursor after it, `data:` = the envelope JSON), one `emit` event per event a running
 * turn emitted (`data:` = `{taskId, agent, ownerId, type, at, data}`, no `id:`: progress, not history; ADR
 * 0010), and a `: ping` comment every `heartbeatMs` so proxies and clients see a live connection. A client
 * that reconnects with `Last-Event-ID` (EventSource does so by itself) resumes right after the last task event
 * it saw, without gaps; emitted events it missed meanwhile are gone.
 *
 * Resources: the streams of a server share one reader of the partition logs (src/LogHub.ts, connection
 * `factorial:sse-log:<namespace>`, reading while any stream follows it), so an open dashboard costs Redis no
 * reads of its own, and each event is serialized once for all of them; a stream that resumes from a cursor the
 * reader no longer holds, or falls too far behind, reads the logs on a connection of its own
 * (`factorial:sse:<namespace>`) until it has caught up. They share one subscription to the emit channel
 * (`factorial:sse-emit:<namespace>`, open while any stream is). A stream's resources are released when its client
 * goes, when it fails, or when the server closes. At most `maxStreams` are open at once (503 `TooManyStreams` beyond).
 */
import { Effect, Schema } from "effect"
import type { FastifyPluginAsync } from "fastify"
import { RedisClient } from "../../streams/RedisClient.ts"
import { AgentName, TaskEvent, type TaskEventTag, TaskId } from "../../streams/TaskEvent.ts"
import { InvalidInput } from "../Errors.ts"
import { liveEvents, type LiveFilter, parseCursor } from "../LiveFeed.ts"
import { type EmitHub, isEmitType, makeEmitHub } from "../LiveEmit.ts"
import { type LogHub, makeLogHub } from "../LogHub.ts"
import { TaskStore } from "../TaskStore.ts"
import type { AppOptions } from "./App.ts"
import { errorBody, sendError } from "./HttpError.ts"
import { decoder } from "./Respond.ts"

export interface LiveRouteOptions {
  /** Interval of the `: ping` comments, ms (default 15 000). */
  readonly heartbeatMs?: number
  /** Streams open at once in this server (default 64); each holds a Redis connection. */
  readonly maxStreams?: number
}

class TooManyStreams extends Schema.TaggedError<TooManyStreams>()("TooManyStreams", { max: Schema.Number }) {
  override get message() {
    return `too many live streams open (at most ${this.max}); try again later`
  }
}

const EventsQuery = Schema.Struct({
  agent: Schema.optionalKey(AgentName),
  owner: Schema.optionalKey(Schema.String),
  task: Schema.optionalKey(Schema.String),
  types: Schema.optionalKey(Schema.String),
  emits: Schema.optionalKey(Schema.String),
  emitTasks: Schema.optionalKey(Schema.String),
  lastEventId: Schema.optionalKey(Schema.String)
})
const decodeEventsQuery = decoder(EventsQuery, "events query")
const decodeTaskIds = decoder(Schema.Array(TaskId), "task filter")
const eventTags = Object.keys(TaskEvent.cases)

const split = (s: string | undefined) => s === undefined ? undefined : s.split(",").filter((x) => x !== "")

export const liveRoute = (options: AppOptions, live: LiveRouteOptions = {}): FastifyPluginAsync => async (app) => {
  const heartbeatMs = live.heartbeatMs ?? 15_000
  const maxStreams = live.maxStreams ?? 64
  const open = new Set<AbortController>()
  /** One subscription to the emit channel for all of this server's streams (made with the first stream). */
  let emitHub: EmitHub | undefined
  /** One reader of the partition logs for all of this server's streams (made with the first stream). */
  let logHub: LogHub | undefined
  /** A task event's JSON, made once for every stream that sends it (streams following the hub share envelopes). */
  const envelopeJson = new WeakMap<object, string>()

  // An open stream would hold `close()` until its client leaves: end them all first.
  app.addHook("preClose", async () => {
    for (const c of open) c.abort()
  })

  app.get("/events", async (request, reply) => {
    if (open.size >= maxStreams) return sendError(reply, new TooManyStreams({ max: maxStreams }))
    // The slot is taken now, before any await, so concurrent requests cannot pass the cap together.
    const controller = new AbortController()
    open.add(controller)
    const setup = await options.run(Effect.gen(function*() {
      const q = yield* decodeEventsQuery(request.query)
      const taskIds = q.task === undefined ? undefined : yield* decodeTaskIds(split(q.task))
      // Emits of these tasks only (task events unaffected): the dashboard follows every task's events but
      // the progress of the one it shows.
      const emitTasks = q.emitTasks === undefined ? undefined : yield* decodeTaskIds(split(q.emitTasks))
      const types = split(q.types)
      const unknown = types?.find((t) => !eventTags.includes(t))
      if (unknown !== undefined) {
        return yield* new InvalidInput({ message: `unknown event type ${JSON.stringify(unknown)}: one of ${eventTags.join(", ")}` })
      }
      // Emitted events: all by default, none with `emits=none`, else the listed types.
      const emitTypes = q.emits === undefined ? undefined : q.emits === "none" ? [] : split(q.emits)
      const badEmit = emitTypes?.find((t) => !isEmitType(t))
      if (badEmit !== undefined) {
        return yield* new InvalidInput({ message: `invalid emitted event type ${JSON.stringify(badEmit)}: 1-64 of [A-Za-z0-9_.:/-], or "none"` })
      }
      const store = yield* TaskStore
      const redis = yield* RedisClient
      const header = request.headers["last-event-id"]
      const given = (Array.isArray(header) ? header[0] : header) ?? q.lastEventId
      const resume = yield* Effect.try({
        try: () => parseCursor(given, store.keyspace.partitions),
        catch: (e) => new InvalidInput({ message: `invalid Last-Event-ID: ${(e as Error).message}` })
      })
      // Without a cursor the stream starts now (the feed says where: its first id).
      const cursor = resume?.join(",")
      const filter: LiveFilter = {
        ...(q.agent !== undefined ? { agent: q.agent } : {}),
        ...(q.owner !== undefined ? { ownerId: q.owner } : {}),
        ...(taskIds !== undefined ? { taskIds } : {}),
        ...(types !== undefined ? { types: types as ReadonlyArray<TaskEventTag> } : {}),
        emits: emitTypes === undefined ? true : emitTypes.length === 0 ? false : emitTypes
      }
      return { keyspace: store.keyspace, redisOptions: redis.options, cursor, filter, emitTasks }
    }))
    if (setup._tag === "Failure") {
      open.delete(controller)
      return sendError(reply, setup.cause.reasons.find((r) => r._tag === "Fail")?.error ?? setup.cause)
    }
    const { keyspace, redisOptions, cursor, filter, emitTasks } = setup.value

    reply.hijack()
    const res = reply.raw
    const headers = Object.fromEntries(Object.entries(reply.getHeaders()).filter(([, v]) => v !== undefined))
    res.writeHead(200, {
      ...(headers as Record<string, string | number | ReadonlyArray<string>>),
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      // The socket serves this one stream: closed with it (so a closing server is not kept waiting).
      connection: "close",
      "x-accel-buffering": "no"
    })
    const onClose = () => controller.abort()
    request.raw.on("close", onClose)
    res.on("close", onClose)
    // A client that left while the stream was being set up: its "close" has already happened.
    if (request.raw.socket.destroyed) controller.abort()

    /** Resolves once the socket has drained (or the client went). */
    const drained = () =>
      new Promise<void>((resolve) => {
        if (controller.signal.aborted) return resolve()
        const done = () => {
          res.off("drain", done)
          controller.signal.removeEventListener("abort", done)
          resolve()
        }
        res.on("drain", done)
        controller.signal.addEventListener("abort", done)
      })
    /**
     * Chunks wait here and go to the socket together: when the feed has nothing more at once (the next turn of the
     * event loop), or when 64 KB wait. A busy feed so costs a socket write per batch of events, not per event.
     */
    let waiting: Array<string> = []
    let waitingBytes = 0
    let flushing: NodeJS.Immediate | undefined
    const flush = () => {
      if (flushing !== undefined) clearImmediate(flushing)
      flushing = undefined
      if (waiting.length === 0) return true
      const chunk = waiting.join("")
      waiting = []
      waitingBytes = 0
      return res.write(chunk)
    }
    /** Writes a chunk (soon); waits for the socket to drain when its buffer is full (or for the client to go). */
    const write = async (chunk: string) => {
      waiting.push(chunk)
      waitingBytes += chunk.length
      if (waitingBytes < 65_536) {
        flushing ??= setImmediate(flush)
        return
      }
      if (!flush()) await drained()
    }

    const heartbeat = setInterval(() => void res.write(": ping\n\n"), heartbeatMs)
    /** Holds the shared emit subscription open from before `ready` (so a client that saw `ready` misses no emit). */
    let holdEmits: (() => void) | undefined
    try {
      if (filter.emits !== false) {
        emitHub ??= makeEmitHub({ ...redisOptions, connectionName: `factorial:sse-emit:${keyspace.namespace}` }, keyspace)
        holdEmits = await emitHub.listen(() => undefined)
      }
      logHub ??= makeLogHub({ ...redisOptions, connectionName: `factorial:sse-log:${keyspace.namespace}` }, keyspace)
      const events = liveEvents(
        { ...redisOptions, connectionName: `factorial:sse:${keyspace.namespace}` },
        keyspace,
        filter,
        {
          cursor,
          signal: controller.signal,
          emitHub,
          logHub,
          // The first chunk of the stream: nothing is written before it, so it never waits for the socket.
          onStart: (start) => void write(`retry: 2000\nid: ${start}\nevent: ready\ndata: ${JSON.stringify({ cursor: start })}\n\n`)
        }
      )
      for await (const e of events) {
        if (controller.signal.aborted) break
        if (e.kind === "emit" && emitTasks !== undefined && !emitTasks.includes(e.emit.taskId)) continue
        if (e.kind === "emit") {
          await write(`event: emit\ndata: ${JSON.stringify(e.emit)}\n\n`)
          continue
        }
        let json = envelopeJson.get(e.envelope)
        if (json === undefined) envelopeJson.set(e.envelope, json = JSON.stringify(e.envelope))
        await write(`id: ${e.cursor}\nevent: task\ndata: ${json}\n\n`)
      }
    } catch (error) {
      if (!controller.signal.aborted) {
        flush()
        res.write(`event: feed-error\ndata: ${JSON.stringify(errorBody(error))}\n\n`)
      }
    } finally {
      holdEmits?.()
      clearInterval(heartbeat)
      open.delete(controller)
      request.raw.off("close", onClose)
      res.off("close", onClose)
      controller.abort()
      flush()
      res.end()
    }
  })
}
