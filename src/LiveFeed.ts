/**
 * Live events: every envelope appended to the partition logs, filtered (owner, agent, task ids, event
 * types), resumable from a cursor without gaps. Pub/sub could not do this; streams can: the cursor is
 * the last id seen in each partition log, and reading resumes strictly after it. Lean entries (an event whose
 * payload, output, messages or result exceed 1 KB) are delivered whole: their text is read back from the
 * task's history (streams/LogEntry.ts).
 *
 * On request (`emits`), the feed also carries what turns emit (`ctx.emit`, src/LiveEmit.ts) as items of
 * another kind: ephemeral progress from the namespace's emit channel, with no cursor — a feed resumed from a
 * cursor does not get the ones it missed (ADR 0010).
 *
 * A subscriber owns one connection (and, with `emits`, a subscription to the emit channel: its own
 * connection unless an `emitHub` shares one), or follows a `LogHub` that reads the logs for every feed of the
 * process (src/LogHub.ts; then it opens a connection of its own only to catch up when the hub cannot serve it).
 * On a standalone Redis a reader blocks on one XREAD over every partition; on a Cluster (where one XREAD
 * cannot span slots) it reads the partitions in turn and pauses 100 ms when all are idle. Heartbeats (in logs
 * written by releases before ADR 0022) are left out unless asked for by type.
 */
import { Effect, Stream } from "effect"
import { Cluster } from "ioredis"
import { allPartitions, type Keyspace, partitionKeys } from "../streams/Keys.ts"
import { connect, makeConnection, type RedisConnection, type RedisOptions } from "../streams/RedisClient.ts"
import { RedisError, toRedisError } from "../streams/StreamError.ts"
import { compareIds } from "../streams/StreamId.ts"
import { wholeEnvelopes } from "../streams/LogEntry.ts"
import type { Envelope, TaskEventTag } from "../streams/TaskEvent.ts"
import { type EmitHub, type EmittedEvent, makeEmitHub } from "./LiveEmit.ts"
import type { HubFollower, LogHub } from "./LogHub.ts"

export interface LiveFilter {
  readonly ownerId?: string
  readonly agent?: string
  readonly taskIds?: ReadonlyArray<string>
  /** Event types to deliver; default: all but TaskHeartbeat. Applies to task events only. */
  readonly types?: ReadonlyArray<TaskEventTag>
  /**
   * Also deliver what turns emit (`ctx.emit`), as `LiveEmit` items: `true` for every type, or only these
   * types. Default: none. They are filtered by owner, agent and task ids like task events.
   */
  readonly emits?: boolean | ReadonlyArray<string>
}

/** An event of a task's history, as appended to its partition log. */
export interface LiveEvent {
  readonly kind: "task"
  readonly envelope: Envelope
  /** Resume point after this event: pass it back as `cursor` to continue without gaps. */
  readonly cursor: string
}

/** An event a turn emitted: progress, not history; it has no cursor and is never replayed. */
export interface LiveEmit {
  readonly kind: "emit"
  readonly emit: EmittedEvent
}

export type LiveItem = LiveEvent | LiveEmit

/** What a feed with filter `F` yields: task events only, unless `F` may ask for emits. */
export type LiveItemOf<F extends LiveFilter> = F extends { readonly emits: infer E } ? ([E] extends [false | undefined] ? LiveEvent : LiveItem)
  : "emits" extends keyof F ? LiveItem
  : LiveEvent

export interface LiveOptions {
  /** Where to start (a cursor from an earlier event); default: now. */
  readonly cursor?: string | undefined
  /** Ends the feed (and closes its connections) when aborted. */
  readonly signal?: AbortSignal | undefined
  /** A subscription to the emit channel shared with other feeds (default: one of the feed's own). */
  readonly emitHub?: EmitHub | undefined
  /** A reader of the logs shared with other feeds (default: the feed reads them itself). */
  readonly logHub?: LogHub | undefined
  /** Told where the feed starts (the cursor before its first event: `cursor`, or "now"), before any item. */
  readonly onStart?: ((cursor: string) => void) | undefined
}

/** A cursor is the last seen id of each partition log, in partition order, joined by ",". */
export const parseCursor = (cursor: string | undefined, partitions: number): Array<string> | undefined => {
  if (cursor === undefined || cursor === "") return undefined
  const ids = cursor.split(",")
  const valid = ids.length === partitions && ids.every((id) => /^\d+-\d+$/.test(id))
  if (!valid) throw new Error(`invalid cursor ${JSON.stringify(cursor)} for ${partitions} partitions`)
  return ids
}

const matchesTask = (filter: LiveFilter, taskId: string, agent: string, ownerId: string): boolean =>
  (filter.ownerId === undefined || ownerId === filter.ownerId) &&
  (filter.agent === undefined || agent === filter.agent) &&
  (filter.taskIds === undefined || filter.taskIds.includes(taskId))

const matches = (filter: LiveFilter, e: Envelope): boolean =>
  matchesTask(filter, e.taskId, e.agent, e.ownerId) &&
  (filter.types === undefined ? e.event._tag !== "TaskHeartbeat" : filter.types.includes(e.event._tag))

/**
 * Whether a lean entry's event passes the filter, read from its head before its fields are restored: `matches`
 * reads only the head's fields (task, agent, owner, the event's tag), which a lean entry keeps.
 */
const leanMatches = (filter: LiveFilter, raw: string): boolean => matches(filter, JSON.parse(raw) as Envelope)

const matchesEmit = (filter: LiveFilter, e: EmittedEvent): boolean =>
  matchesTask(filter, e.taskId, e.agent, e.ownerId) &&
  (filter.emits === true || (Array.isArray(filter.emits) && filter.emits.includes(e.type)))

/** The cursor of "now": the last id of every partition log ("0-0" for an empty one). */
export const cursorNow = async (conn: RedisConnection, keyspace: Keyspace): Promise<string> =>
  (await Promise.all(allPartitions(keyspace).map(async (p) => {
    const top = (await conn.xrevrange(partitionKeys(keyspace, p).events, "+", "-", "COUNT", 1)) as Array<[string, unknown]>
    return top[0]?.[0] ?? "0-0"
  }))).join(",")

type XReadReply = Array<[string, Array<[string, Array<string>]>]> | null
type LogEntries = Array<[string, Array<string>]>

/**
 * One read of the partition logs after `last` (their last seen ids), as `[partition, entries]`: on a standalone
 * Redis one XREAD over all, blocking up to a second; on a Cluster each partition in turn (until `stop()`), then a
 * 100 ms pause when none had anything.
 */
export const readLogs = async (
  c: RedisConnection,
  streams: ReadonlyArray<string>,
  last: ReadonlyArray<string>,
  stop: () => boolean
): Promise<Array<[number, LogEntries]>> => {
  if (!(c instanceof Cluster)) {
    const reply = (await c.xread("COUNT", 200, "BLOCK", 1000, "STREAMS", ...streams, ...last)) as XReadReply
    return (reply ?? []).map(([key, entries]) => [streams.indexOf(key), entries])
  }
  const replies: Array<[number, LogEntries]> = []
  for (let p = 0; p < streams.length; p++) {
    // Not one command after a stop: a Cluster connection closed meanwhile keeps a command sent then in its
    // offline queue for good, and the reader's end would wait on it.
    if (stop()) break
    const reply = (await c.xread("COUNT", 200, "STREAMS", streams[p]!, last[p]!)) as XReadReply
    if (reply?.[0] !== undefined) replies.push([p, reply[0][1]])
  }
  if (replies.length === 0) await new Promise((r) => setTimeout(r, 100))
  return replies
}

/** Emits held for a slow consumer; beyond it the oldest are dropped (they are progress, not history). */
const MAX_QUEUED_EMITS = 1_000
/** Task events read ahead of the consumer; the reads pause beyond it (the logs keep the rest). */
const MAX_QUEUED_EVENTS = 1_000

/**
 * Live events as an async iterable; stops when `signal` aborts. Starts at `cursor`, or at "now". With
 * `filter.emits`, emitted events are merged in as they arrive (subscribed before the first read, so none
 * emitted after the feed started is missed while it runs).
 */
export function liveEvents<F extends LiveFilter>(
  redis: RedisOptions,
  keyspace: Keyspace,
  filter: F,
  options: LiveOptions = {}
): AsyncGenerator<LiveItemOf<F>> {
  return liveItems(redis, keyspace, filter, options) as AsyncGenerator<LiveItemOf<F>>
}

async function* liveItems(
  redis: RedisOptions,
  keyspace: Keyspace,
  filter: LiveFilter,
  options: LiveOptions
): AsyncGenerator<LiveItem> {
  const streams = allPartitions(keyspace).map((p) => partitionKeys(keyspace, p).events)
  const signal = options.signal
  const aborted = () => signal?.aborted === true
  const queue: Array<LiveItem> = []
  let queuedEmits = 0
  let failure: unknown
  let readerDone = false
  let closed = false
  let wake: (() => void) | undefined
  let resumeReader: (() => void) | undefined
  let conn: RedisConnection | undefined
  let follower: HubFollower | undefined
  let reader: Promise<void> | undefined
  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const resume = () => {
    const r = resumeReader
    resumeReader = undefined
    r?.()
  }
  const onAbort = () => {
    conn?.disconnect()
    follower?.close()
    notify()
    resume()
  }
  signal?.addEventListener("abort", onAbort)
  // The emit listener is in place from the first `next()` on, before any I/O: with a hub that is already
  // subscribed (the SSE route's), nothing emitted from then on is missed.
  const listening = filter.emits === undefined || filter.emits === false ? undefined : (options.emitHub ?? makeEmitHub(
    { ...redis, connectionName: redis.connectionName === undefined ? undefined : `${redis.connectionName}:emit` },
    keyspace
  )).listen((emit) => {
    if (closed || !matchesEmit(filter, emit)) return
    if (queuedEmits >= MAX_QUEUED_EMITS) {
      queue.splice(queue.findIndex((i) => i.kind === "emit"), 1)
      queuedEmits--
    }
    queue.push({ kind: "emit", emit })
    queuedEmits++
    notify()
  })
  listening?.catch(() => undefined) // awaited below; handled here too in case the connect fails first
  /** The feed's own connection, opened when it reads the logs itself. */
  const own = async (): Promise<RedisConnection> => {
    conn ??= await connect(makeConnection(redis), "live feed")
    if (aborted()) conn.disconnect()
    return conn
  }
  const wants = (raw: string) => leanMatches(filter, raw)
  try {
    if (listening !== undefined) await listening
    if (aborted()) return
    follower = await options.logHub?.follow(options.cursor, wants)
    const last = parseCursor(follower?.cursor ?? options.cursor ?? (await cursorNow(await own(), keyspace)), streams.length)!
    options.onStart?.(last.join(","))
    reader = (async () => {
      while (!closed && !aborted()) {
        if (queue.length - queuedEmits >= MAX_QUEUED_EVENTS) {
          await new Promise<void>((r) => (resumeReader = r))
          continue
        }
        if (follower !== undefined) {
          const taken = await follower.next()
          if (taken === "detached") {
            follower = undefined
            continue
          }
          for (const e of taken) {
            // Attached behind its cursor (it caught up alone, LogHub.follow): what it has already, it passes over.
            const id = e.cursor.split(",")[e.partition]!
            if (compareIds(id, last[e.partition]!) <= 0) continue
            // A lean entry this feed may want that the hub did not restore: read on from before it, alone.
            if (e.decoded === undefined && !e.restored && wants(e.text)) {
              follower.close()
              follower = undefined
              break
            }
            last[e.partition] = id
            if (e.decoded?._tag === "Success" && matches(filter, e.decoded.success)) {
              // The feed's own cursor: where it attached ahead of the hub, the hub's is behind it in some partition.
              queue.push({ kind: "task", envelope: e.decoded.success, cursor: last.join(",") })
            }
          }
          notify()
          continue
        }
        const c = await own()
        const replies = await readLogs(c, streams, last, () => closed || aborted())
        for (const [p, entries] of replies) {
          // Lean entries (large fields in the history only) are read back only when they pass the filter.
          const texts = entries.map(([id, fields]) => [id, fields[1] ?? ""] as const)
          const envelopes = await wholeEnvelopes(c, keyspace, texts, wants)
          entries.forEach(([id], k) => {
            last[p] = id
            const decoded = envelopes[k]
            if (decoded?._tag === "Success" && matches(filter, decoded.success)) {
              queue.push({ kind: "task", envelope: decoded.success, cursor: last.join(",") })
            }
          })
        }
        notify()
        // Caught up with the hub (at a cursor it holds, or at or past its head): follow it again, and give the
        // connection back. A feed at the logs' end with no hub reading (nobody followed one, or it failed) starts one.
        const at = last.join(",")
        follower = await options.logHub?.follow(at, wants)
        if (follower === undefined && replies.length === 0 && options.logHub !== undefined) {
          const starter = await options.logHub.follow(undefined, wants)
          follower = await options.logHub.follow(at, wants)
          starter?.close()
        }
        if (follower !== undefined) {
          conn?.disconnect()
          conn = undefined
        }
      }
    })().catch((e: unknown) => {
      if (!aborted()) failure = e
    }).finally(() => {
      readerDone = true
      notify()
    })
    while (!aborted()) {
      const item = queue.shift()
      if (item !== undefined) {
        if (item.kind === "emit") queuedEmits--
        else if (queue.length - queuedEmits < MAX_QUEUED_EVENTS / 2) resume()
        yield item
        continue
      }
      if (failure !== undefined) throw failure
      if (readerDone) return
      await new Promise<void>((r) => (wake = r))
    }
  } catch (e) {
    if (!aborted()) throw e instanceof RedisError ? e : toRedisError("live feed", e)
  } finally {
    closed = true
    follower?.close()
    signal?.removeEventListener("abort", onAbort)
    listening?.then((unlisten) => unlisten(), () => undefined)
    conn?.disconnect()
    resume()
    await reader
  }
}

/** The same as an Effect Stream; interrupting it closes its connections. */
export const liveEventStream = <F extends LiveFilter>(
  redis: RedisOptions,
  keyspace: Keyspace,
  filter: F,
  cursor?: string
): Stream.Stream<LiveItemOf<F>, RedisError> =>
  Stream.unwrap(Effect.sync(() => {
    const controller = new AbortController()
    return Stream.fromAsyncIterable(
      liveEvents(redis, keyspace, filter, { ...(cursor !== undefined ? { cursor } : {}), signal: controller.signal }),
      (e) => (e as RedisError)._tag === "RedisError" ? (e as RedisError) : toRedisError("live feed", e)
    ).pipe(Stream.ensuring(Effect.sync(() => controller.abort())))
  }))
