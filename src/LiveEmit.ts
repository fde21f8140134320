/**
 * Progress events a turn emits with `ctx.emit(type, data)`: ephemeral live updates, not part of any history
 * (ADR 0010). The worker hands each one to `onEmit`; the publisher here checks it and PUBLISHes one small JSON
 * message on the namespace's emit channel; live feeds (`LiveFeed.ts`, the SSE route, `tail`) subscribe to it.
 *
 * Bounds, so a chatty or buggy turn cannot flood Redis or the feeds: `type` is 1-64 of [A-Za-z0-9_.:/-],
 * `data` must serialize to JSON of at most `maxDataBytes`, and each task may emit `perTaskPerSecond` on
 * average with bursts of `burst` (per process). Anything else is dropped with a logged warning (at most one
 * per 5 s, with the count of the rest); `emit` never throws into the turn and never waits.
 *
 * A message is `{taskId, agent, ownerId, type, at, data}` (the owner, from the running turn, lets owner-filtered
 * feeds filter emits too); one task's messages are published on one connection, in the order they were emitted.
 */
import { Schema } from "effect"
import { namespaceKeys, type Keyspace } from "../streams/Keys.ts"
import { connect, makeConnection, orderedNode, type RedisConnection, type RedisOptions } from "../streams/RedisClient.ts"
import { toRedisError } from "../streams/StreamError.ts"

/** The type of an emitted event: 1-64 of letters, digits, '_', '.', ':', '/' or '-' (safe in lists and lines). */
const typePattern = /^[A-Za-z0-9_.:/-]{1,64}$/

/** One emitted event as published and delivered: whose, what and when (ms); `data` is the turn's JSON value. */
export const EmittedEvent = Schema.Struct({
  taskId: Schema.String,
  agent: Schema.String,
  ownerId: Schema.String,
  type: Schema.String,
  at: Schema.Number,
  data: Schema.Unknown
})
export type EmittedEvent = typeof EmittedEvent.Type

const decodeMessage = Schema.decodeUnknownExit(Schema.fromJsonString(EmittedEvent))

/** A message from the emit channel, or undefined when it is not one. */
export const decodeEmitted = (raw: string): EmittedEvent | undefined => {
  const exit = decodeMessage(raw)
  return exit._tag === "Success" ? exit.value : undefined
}

export interface EmitLimits {
  /** Largest `data`, as UTF-8 bytes of its JSON. Default 16 KiB. */
  readonly maxDataBytes: number
  /** Emits per task and second on average (per process). Default 20. */
  readonly perTaskPerSecond: number
  /** Emits a task may send at once before the rate applies. Default 40. */
  readonly burst: number
}

export const defaultEmitLimits: EmitLimits = { maxDataBytes: 16 * 1024, perTaskPerSecond: 20, burst: 40 }

/** Checks limits given by a user (positive, finite); returns a message for the first bad one. */
export const checkEmitLimits = (limits: Partial<EmitLimits>): string | undefined => {
  for (const [key, value] of Object.entries(limits)) {
    if (!(key in defaultEmitLimits)) return `emitLimits: unknown field ${key}`
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) return `emitLimits.${key} must be a positive number, got ${value}`
  }
  return undefined
}

export type EmitDropReason = "invalidType" | "notJson" | "tooLarge" | "rateLimited" | "publishFailed"

export interface EmitPublisher {
  /** The worker's `onEmit` for one agent's pool: checks, then publishes in the background. Never throws. */
  readonly forAgent: (agent: string) => (task: { readonly taskId: string; readonly ownerId: string }, type: string, data: unknown) => void
  /** Emits dropped so far in this process, by reason. */
  readonly dropped: () => Readonly<Record<EmitDropReason, number>>
  /** Stops the warning timer (the process is stopping). */
  readonly close: () => void
}

/** Tasks whose rate state is kept; beyond it the oldest are forgotten (and start again with a full burst). */
const MAX_TRACKED_TASKS = 10_000
const WARN_INTERVAL_MS = 5_000

interface TaskState {
  tokens: number
  refilledAt: number
}

const noDrops = (): Record<EmitDropReason, number> => ({
  invalidType: 0,
  notJson: 0,
  tooLarge: 0,
  rateLimited: 0,
  publishFailed: 0
})

export const makeEmitPublisher = (options: {
  /** The shared command connection. */
  readonly conn: RedisConnection
  readonly keyspace: Keyspace
  readonly limits?: Partial<EmitLimits> | undefined
  readonly warn: (message: string) => void
  readonly now?: () => number
}): EmitPublisher => {
  const { conn, keyspace, warn } = options
  const limits = { ...defaultEmitLimits, ...options.limits }
  const now = options.now ?? Date.now
  const channel = namespaceKeys(keyspace).emit
  const tasks = new Map<string, TaskState>()
  const total = noDrops()
  let unreported = noDrops()
  let timer: ReturnType<typeof setTimeout> | undefined

  /** Logs the first drop at once, then at most one summary per interval. */
  const flush = () => {
    timer = undefined
    const counts = Object.entries(unreported).filter(([, n]) => n > 0)
    unreported = noDrops()
    if (counts.length === 0) return
    const n = counts.reduce((sum, [, c]) => sum + c, 0)
    warn(`dropped ${n} more emitted event(s) in the last ${WARN_INTERVAL_MS / 1000} s (${counts.map(([r, c]) => `${r}: ${c}`).join(", ")})`)
    timer = setTimeout(flush, WARN_INTERVAL_MS)
    timer.unref?.()
  }
  const drop = (reason: EmitDropReason, detail: () => string) => {
    total[reason]++
    if (timer !== undefined) {
      unreported[reason]++
      return
    }
    warn(`dropped an emitted event (${reason}): ${detail()}; emitted events are not stored, the turn goes on`)
    timer = setTimeout(flush, WARN_INTERVAL_MS)
    timer.unref?.()
  }

  const stateOf = (taskId: string, at: number): TaskState => {
    let state = tasks.get(taskId)
    if (state === undefined) {
      if (tasks.size >= MAX_TRACKED_TASKS) tasks.delete(tasks.keys().next().value!)
      state = { tokens: limits.burst, refilledAt: at }
      tasks.set(taskId, state)
    }
    return state
  }

  const emit = (agent: string, taskId: string, ownerId: string, type: unknown, data: unknown) => {
    if (typeof type !== "string" || !typePattern.test(type)) {
      return drop("invalidType", () => `task ${taskId} (${agent}): type ${short(type)} is not 1-64 of [A-Za-z0-9_.:/-]`)
    }
    const at = now()
    const state = stateOf(taskId, at)
    state.tokens = Math.min(limits.burst, state.tokens + ((at - state.refilledAt) / 1000) * limits.perTaskPerSecond)
    state.refilledAt = at
    if (state.tokens < 1) {
      return drop("rateLimited", () => `task ${taskId} (${agent}) emits more than ${limits.perTaskPerSecond}/s (bursts of ${limits.burst})`)
    }
    state.tokens -= 1
    // Serialized now: the turn may change `data` after emitting it.
    let json: string | undefined
    try {
      json = JSON.stringify(data === undefined ? null : data)
    } catch (e) {
      return drop("notJson", () => `task ${taskId} (${agent}), type ${type}: data is not JSON (${e instanceof Error ? e.message : String(e)})`)
    }
    if (json === undefined) return drop("notJson", () => `task ${taskId} (${agent}), type ${type}: data is not JSON`)
    if (json.length > limits.maxDataBytes || (json.length * 3 > limits.maxDataBytes && Buffer.byteLength(json) > limits.maxDataBytes)) {
      return drop("tooLarge", () => `task ${taskId} (${agent}), type ${type}: data is ${Buffer.byteLength(json!)} bytes of JSON, more than ${limits.maxDataBytes}`)
    }
    const message = `{"taskId":${JSON.stringify(taskId)},"agent":${JSON.stringify(agent)},"ownerId":${JSON.stringify(ownerId)},` +
      `"type":${JSON.stringify(type)},"at":${at},"data":${json}}`
    ;(orderedNode(conn).publish(channel, message) as Promise<unknown>).catch((e: unknown) =>
      drop("publishFailed", () => `task ${taskId} (${agent}): ${e instanceof Error ? e.message : String(e)}`)
    )
  }

  return {
    forAgent: (agent) => ({ taskId, ownerId }, type, data) => {
      try {
        emit(agent, taskId, ownerId, type, data)
      } catch {
        // Never into the turn.
      }
    },
    dropped: () => ({ ...total }),
    close: () => {
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
    }
  }
}

const short = (value: unknown): string => {
  const s = typeof value === "string" ? JSON.stringify(value) : String(value)
  return s.length > 80 ? `${s.slice(0, 79)}…` : s
}

/**
 * One subscription to the emit channel shared by many listeners (e.g. every SSE stream of a server): the
 * connection opens with the first listener and closes with the last. A listener gets every message of the
 * namespace (filtering is its own business). Messages published while nobody listens are gone.
 */
export interface EmitHub {
  /** Resolves once subscribed (so nothing emitted after it is missed); call the returned function to stop. */
  readonly listen: (listener: (event: EmittedEvent) => void) => Promise<() => void>
}

export const makeEmitHub = (redis: RedisOptions, keyspace: Keyspace): EmitHub => {
  const channel = namespaceKeys(keyspace).emit
  const listeners = new Set<(event: EmittedEvent) => void>()
  let open: Promise<RedisConnection> | undefined

  const start = async (): Promise<RedisConnection> => {
    const conn = await connect(makeConnection(redis), "emit subscribe")
    try {
      conn.on("message", (_channel: string, raw: string) => {
        const event = decodeEmitted(raw)
        if (event === undefined) return
        for (const f of [...listeners]) f(event)
      })
      await conn.subscribe(channel)
      return conn
    } catch (e) {
      conn.disconnect()
      throw toRedisError("emit subscribe", e)
    }
  }
  const stopIfIdle = () => {
    if (listeners.size > 0 || open === undefined) return
    const closing = open
    open = undefined
    closing.then((c) => c.disconnect(), () => undefined)
  }

  return {
    listen: async (listener) => {
      listeners.add(listener)
      const opening = open ??= start()
      try {
        await opening
      } catch (e) {
        listeners.delete(listener)
        if (open === opening) open = undefined
        throw e
      }
      let stopped = false
      return () => {
        if (stopped) return
        stopped = true
        listeners.delete(listener)
        stopIfIdle()
      }
    }
  }
}

/** Whether `type` is a valid emitted event type. */
export const isEmitType = (type: string): boolean => typePattern.test(type)
