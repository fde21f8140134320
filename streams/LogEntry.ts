/**
 * A partition-log entry as a whole envelope. The scripts write an event whose payload, output, steering
 * messages or result exceed 1 KB to the partition log *lean*: the envelope's head with `"lean":1` in place of
 * the event's fields but the ones the metrics fold reads (streams/lua/lib.lua, ADR 0017). The task's history
 * has the event whole, at index version − 1; `wholeEnvelopes` reads it back for readers that deliver
 * envelopes (the live feed), pipelined per partition, and names it with the log entry's task, agent and owner
 * (a history entry past the first leaves them out, ADR 0026).
 *
 * Invariant: a restored envelope is the history entry of the same event — its `id` is the log entry's stream id
 * (the history entry names it) — or nothing: an entry whose history is gone (expired past its retention) is
 * left out rather than delivered without its fields.
 */
import type { Result } from "effect"
import { type Keyspace, taskKeys } from "./Keys.ts"
import type { RedisConnection } from "./RedisClient.ts"
import type { CorruptEntry } from "./StreamError.ts"
import { decodeEnvelopeResult, decodeHistoryEntry, type Envelope, type HistoryOwner } from "./TaskEvent.ts"

const LEAN_END = `,"lean":1}}`
/**
 * The opening of every partition-log entry the scripts write, up to the owner (streams/lua/lib.lua,
 * `envelope_parts`): the version, task id, agent and the owner as a JSON string.
 */
const OPENING = /^\{"version":(\d+),"at":\d+,"taskId":"([^"\\]+)","agent":"([^"\\]+)","ownerId":("(?:[^"\\]|\\.)*")/

/** The task, agent and owner an OPENING match names; undefined for an owner that is not a JSON string. */
const ownerOf = (m: RegExpExecArray): HistoryOwner | undefined => {
  try {
    return { taskId: m[2]!, agent: m[3]!, ownerId: JSON.parse(m[4]!) as string }
  } catch {
    return undefined
  }
}

/** Whether a log entry's text is lean (its event's fields are in the history only). */
export const isLean = (raw: string): boolean => raw.endsWith(LEAN_END)

/**
 * The envelope of each entry (`[stream id, text]`, all of one partition), decoded: lean ones from their
 * history entries when `restore(text)` says so (by default all), else undefined, as for a lean entry whose
 * history entry is gone. One pipelined round trip when any entry is restored, none otherwise. `sizes`, when
 * given, gets the length of the text each envelope was decoded from (a restored one's history entry).
 */
export const wholeEnvelopes = async (
  conn: RedisConnection,
  keyspace: Keyspace,
  entries: ReadonlyArray<readonly [id: string, raw: string]>,
  restore: (raw: string) => boolean = () => true,
  sizes?: Array<number>
): Promise<Array<Result.Result<Envelope, CorruptEntry> | undefined>> => {
  if (sizes !== undefined) entries.forEach(([, raw], i) => (sizes[i] = raw.length))
  const out = entries.map(([id, raw]) => (isLean(raw) ? undefined : decodeEnvelopeResult(raw, id)))
  const lean = entries.flatMap(([id, raw], i) => {
    const m = isLean(raw) && restore(raw) ? OPENING.exec(raw) : null
    const owner = m === null ? undefined : ownerOf(m)
    if (m === null || owner === undefined) return []
    return [{ i, id, owner, key: taskKeys(keyspace, owner.taskId).log, index: Number(m[1]) - 1 }]
  })
  if (lean.length === 0) return out
  const pipeline = conn.pipeline()
  for (const l of lean) pipeline.lindex(l.key, l.index)
  const replies = (await pipeline.exec()) ?? []
  lean.forEach((l, k) => {
    const [err, text] = replies[k] ?? [null, null]
    if (err) throw err
    if (typeof text === "string" && text.startsWith(`{"id":"${l.id}",`)) {
      out[l.i] = decodeHistoryEntry(text, l.owner)
      if (sizes !== undefined) sizes[l.i] = text.length
    }
  })
  return out
}
