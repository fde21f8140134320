/**
 * Live events: every envelope appended to the partition logs, filtered (owner, agent, task ids, event
 * types), resumable from a cursor without gaps. Pub/sub could not do this; streams can: the cursor is
 * the last id seen in each partition log, and reading resumes strictly after it.
 *
 * A subscriber owns one connection. On a standalone Redis it blocks on one XREAD over every partition;
 * on a Cluster (where one XREAD cannot span slots) it reads the partitions in turn and pauses 100 ms
 * when all are idle. Heartbeats are left out unless asked for by type.
 */
import { Effect, Stream } from "effect"
import { Cluster } from "ioredis"
import { allPartitions, type Keyspace, partitionKeys } from "../streams/Keys.ts"
import { connect, makeConnection, type RedisConnection, type RedisOptions } from "../streams/RedisClient.ts"
import { type RedisError, toRedisError } from "../streams/StreamError.ts"
import { decodeEnvelopeResult, type Envelope, type TaskEventTag } from "../streams/TaskEvent.ts"

export interface LiveFilter {
  readonly ownerId?: string
  readonly agent?: string
  readonly taskIds?: ReadonlyArray<string>
  /** Event types to deliver; default: all but TaskHeartbeat. */
  readonly types?: ReadonlyArray<TaskEventTag>
}

export interface LiveEvent {
  readonly envelope: Envelope
  /** Resume point after this event: pass it back as `cursor` to continue without gaps. */
  readonly cursor: string
}

/** A cursor is the last seen id of each partition log, in partition order, joined by ",". */
export const parseCursor = (cursor: string | undefined, partitions: number): Array<string> | undefined => {
  if (cursor === undefined || cursor === "") return undefined
  const ids = cursor.split(",")
  const valid = ids.length === partitions && ids.every((id) => /^\d+-\d+$/.test(id))
  if (!valid) throw new Error(`invalid cursor ${JSON.stringify(cursor)} for ${partitions} partitions`)
  return ids
}

const matches = (filter: LiveFilter, e: Envelope): boolean =>
  (filter.ownerId === undefined || e.ownerId === filter.ownerId) &&
  (filter.agent === undefined || e.agent === filter.agent) &&
  (filter.taskIds === undefined || filter.taskIds.includes(e.taskId)) &&
  (filter.types === undefined ? e.event._tag !== "TaskHeartbeat" : filter.types.includes(e.event._tag))

/** The cursor of "now": the last id of every partition log ("0-0" for an empty one). */
export const cursorNow = async (conn: RedisConnection, keyspace: Keyspace): Promise<string> =>
  (await Promise.all(allPartitions(keyspace).map(async (p) => {
    const top = (await conn.xrevrange(partitionKeys(keyspace, p).events, "+", "-", "COUNT", 1)) as Array<[string, unknown]>
    return top[0]?.[0] ?? "0-0"
  }))).join(",")

type XReadReply = Array<[string, Array<[string, Array<string>]>]> | null

/** Live events as an async iterable; stops when `signal` aborts. Starts at `cursor`, or at "now". */
export async function* liveEvents(
  redis: RedisOptions,
  keyspace: Keyspace,
  filter: LiveFilter,
  options: { readonly cursor?: string; readonly signal?: AbortSignal } = {}
): AsyncGenerator<LiveEvent> {
  const streams = allPartitions(keyspace).map((p) => partitionKeys(keyspace, p).events)
  const conn: RedisConnection = await connect(makeConnection(redis), "live feed")
  const onAbort = () => conn.disconnect()
  options.signal?.addEventListener("abort", onAbort)
  try {
    const last = parseCursor(options.cursor ?? (await cursorNow(conn, keyspace)), streams.length)!
    const cluster = conn instanceof Cluster
    while (options.signal?.aborted !== true) {
      let replies: Array<[number, Array<[string, Array<string>]>]> = []
      if (!cluster) {
        const reply = (await conn.xread("COUNT", 200, "BLOCK", 1000, "STREAMS", ...streams, ...last)) as XReadReply
        replies = (reply ?? []).map(([key, entries]) => [streams.indexOf(key), entries])
      } else {
        for (let p = 0; p < streams.length; p++) {
          const reply = (await conn.xread("COUNT", 200, "STREAMS", streams[p]!, last[p]!)) as XReadReply
          if (reply?.[0] !== undefined) replies.push([p, reply[0][1]])
        }
        if (replies.length === 0) await new Promise((r) => setTimeout(r, 100))
      }
      for (const [p, entries] of replies) {
        for (const [id, fields] of entries) {
          last[p] = id
          const raw = fields[1]
          if (raw === undefined) continue
          const decoded = decodeEnvelopeResult(raw, id)
          if (decoded._tag === "Success" && matches(filter, decoded.success)) {
            yield { envelope: decoded.success, cursor: last.join(",") }
          }
        }
      }
    }
  } catch (e) {
    if (options.signal?.aborted !== true) throw toRedisError("live feed", e)
  } finally {
    options.signal?.removeEventListener("abort", onAbort)
    conn.disconnect()
  }
}

/** The same as an Effect Stream; interrupting it closes its connection. */
export const liveEventStream = (
  redis: RedisOptions,
  keyspace: Keyspace,
  filter: LiveFilter,
  cursor?: string
): Stream.Stream<LiveEvent, RedisError> =>
  Stream.unwrap(Effect.sync(() => {
    const controller = new AbortController()
    return Stream.fromAsyncIterable(
      liveEvents(redis, keyspace, filter, { ...(cursor !== undefined ? { cursor } : {}), signal: controller.signal }),
      (e) => (e as RedisError)._tag === "RedisError" ? (e as RedisError) : toRedisError("live feed", e)
    ).pipe(Stream.ensuring(Effect.sync(() => controller.abort())))
  }))
