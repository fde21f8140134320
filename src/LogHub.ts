/**
 * One reader of a namespace's partition logs, shared by the live feeds of a process (the SSE route's streams,
 * one per open dashboard): however many follow, Redis serves one XREAD loop and each entry is decoded once.
 * Every feed reading the logs itself cost Redis the whole log again: eight open dashboards took a 100-slot drain
 * from 15,000–20,000 to 5,600–6,800 jobs a second (`npm run bench:live-viewers`).
 *
 * The hub reads while anyone follows it and keeps the last `capacity` entries it read, each with the cursor after
 * it. A follower attaches at "now" (the hub's head), at a cursor the hub still holds, or at a cursor at or past
 * the hub's head in every partition (a feed that read alone and caught up): then it takes the entries after the
 * head and passes over those it already has (at or before its cursor in their partition). Lean entries (streams/LogEntry.ts) are restored from the history when a follower's
 * filter may want them.
 *
 * Invariant: a follower gets exactly what reading the logs itself from its cursor would give, in the same order.
 * When it cannot — it fell more than `capacity` entries behind, its cursor is not held, an entry it wants was
 * not restored, or the hub's reads failed — `next` says `"detached"` and the follower reads the logs itself from
 * the last cursor it took (src/LiveFeed.ts does), so nothing is skipped or repeated.
 */
import type { Result } from "effect"
import { allPartitions, type Keyspace, partitionKeys } from "../streams/Keys.ts"
import { connect, makeConnection, type RedisConnection, type RedisOptions } from "../streams/RedisClient.ts"
import { isLean, wholeEnvelopes } from "../streams/LogEntry.ts"
import type { CorruptEntry } from "../streams/StreamError.ts"
import { compareIds } from "../streams/StreamId.ts"
import type { Envelope } from "../streams/TaskEvent.ts"
import { cursorNow, readLogs } from "./LiveFeed.ts"

/** One log entry as the hub read it, with the cursor after it. */
export interface HubEntry {
  readonly partition: number
  /** The entry's text in the log (lean or whole). */
  readonly text: string
  /** Its envelope; undefined for a lean entry not restored (`restored` false) or whose history is gone. */
  readonly decoded: Result.Result<Envelope, CorruptEntry> | undefined
  /** Whether a lean entry's restoring was tried (by the filters of the followers when it was read). */
  readonly restored: boolean
  /** The cursor after this entry. */
  readonly cursor: string
  /** The length of the text its envelope was decoded from (what holding it costs, about). */
  readonly bytes: number
}

export interface HubFollower {
  /** Where the follower starts: the cursor after the last entry before its first. */
  readonly cursor: string
  /**
   * The entries after the ones taken so far (waits until there are some). `"detached"`: the hub cannot serve this
   * follower any more; it reads the logs itself from the last cursor it took.
   */
  readonly next: () => Promise<ReadonlyArray<HubEntry> | "detached">
  /** Stops following (ends a waiting `next` with `"detached"`). */
  readonly close: () => void
}

export interface LogHub {
  /**
   * Follows from `cursor` (undefined: now); `wants(text)` says whether a lean entry may pass the follower's
   * filter. Undefined when the hub neither holds that cursor nor is at or behind it in every partition. The
   * entries it gives may then start before the cursor: the follower passes over those (LiveFeed.ts does).
   */
  readonly follow: (cursor: string | undefined, wants: (text: string) => boolean) => Promise<HubFollower | undefined>
  /** Followers now (for tests and gauges). */
  readonly followers: () => number
}

/**
 * What the hub keeps by default: a follower may fall this far behind before it reads the logs itself. Entries
 * with large payloads (restored conversations) count by their size, so the hub's memory stays bounded.
 */
export const DEFAULT_HUB_CAPACITY = { entries: 10_000, bytes: 64 * 1024 * 1024 }

interface Follower {
  /** The position of the next entry to take (positions count every entry the hub read since it started). */
  at: number
  readonly wants: (text: string) => boolean
  wake: (() => void) | undefined
  closed: boolean
}

/** Whether cursor `a` is at or past cursor `b` in every partition. */
const notBehind = (a: string, b: string): boolean => {
  const as = a.split(",")
  const bs = b.split(",")
  return as.length === bs.length && as.every((id, p) => compareIds(id, bs[p]!) >= 0)
}

export const makeLogHub = (
  redis: RedisOptions,
  keyspace: Keyspace,
  capacity: { readonly entries: number; readonly bytes: number } = DEFAULT_HUB_CAPACITY
): LogHub => {
  const streams = allPartitions(keyspace).map((p) => partitionKeys(keyspace, p).events)
  const followers = new Set<Follower>()
  /** What the current run of the reader holds; a new run starts when the first follower comes after the last left. */
  let run:
    | {
      readonly entries: Array<HubEntry>
      /** The position of entries[0]. */
      base: number
      /** Cursor → the position after it, for the start and every entry held. */
      readonly positions: Map<string, number>
      /** The cursor after the last entry read. */
      head: string
      /** The bytes of the entries held. */
      bytes: number
      failed: boolean
      readonly started: Promise<void>
      /** Ends the reader at once (its connection closed under its blocking read). */
      readonly stop: () => void
    }
    | undefined

  const wakeAll = () => {
    for (const f of followers) {
      const w = f.wake
      f.wake = undefined
      w?.()
    }
  }

  const start = () => {
    let conn: RedisConnection | undefined
    let ready = () => {}
    let notReady = (_: unknown) => {}
    const started = new Promise<void>((resolve, reject) => {
      ready = resolve
      notReady = reject
    })
    started.catch(() => undefined) // awaited by `follow`; a failed start makes it answer `undefined`
    const current = {
      entries: [] as Array<HubEntry>,
      base: 0,
      positions: new Map<string, number>(),
      head: "",
      bytes: 0,
      failed: false,
      started,
      stop: () => conn?.disconnect()
    }
    const stopped = () => run !== current
    run = current
    void (async () => {
      try {
        conn = await connect(makeConnection(redis), "live log hub")
        const last = (await cursorNow(conn, keyspace)).split(",")
        current.head = last.join(",")
        current.positions.set(current.head, 0)
        ready()
        while (!stopped()) {
          const replies = await readLogs(conn, streams, last, stopped)
          for (const [p, entries] of replies) {
            const texts = entries.map(([id, fields]) => [id, fields[1] ?? ""] as const)
            // Lean entries are restored when some follower's filter may want them (those that come later and want
            // one read on by themselves from before it).
            const restored = new Set<string>()
            const sizes: Array<number> = []
            const envelopes = await wholeEnvelopes(conn, keyspace, texts, (text) => {
              const wanted = [...followers].some((f) => f.wants(text))
              if (wanted) restored.add(text)
              return wanted
            }, sizes)
            texts.forEach(([id, text], k) => {
              last[p] = id
              const cursor = last.join(",")
              const bytes = sizes[k] ?? text.length
              current.bytes += bytes
              const decoded = envelopes[k]
              current.entries.push({ partition: p, text, decoded, restored: !isLean(text) || restored.has(text), cursor, bytes })
              current.positions.set(cursor, current.base + current.entries.length)
              current.head = cursor
            })
          }
          // Beyond capacity the oldest go, with the cursors that pointed before them.
          let excess = Math.max(0, current.entries.length - capacity.entries)
          let kept = current.bytes
          for (let k = 0; k < excess; k++) kept -= current.entries[k]!.bytes
          while (kept > capacity.bytes && excess < current.entries.length) kept -= current.entries[excess++]!.bytes
          if (excess > 0) {
            current.bytes = kept
            for (const [cursor, at] of current.positions) {
              if (at >= current.base + excess) break
              current.positions.delete(cursor)
            }
            current.entries.splice(0, excess)
            current.base += excess
          }
          if (replies.length > 0) wakeAll()
        }
      } catch (e) {
        notReady(e)
        current.failed = true
        if (run === current) run = undefined
        wakeAll()
      } finally {
        conn?.disconnect()
      }
    })()
    return current
  }

  const stopIfIdle = () => {
    if (followers.size > 0 || run === undefined) return
    const idle = run
    run = undefined
    idle.stop()
  }

  return {
    followers: () => followers.size,
    follow: async (cursor, wants) => {
      // A cursor is held only by a running reader: a new one starts at "now".
      if (run === undefined && cursor !== undefined) return undefined
      const current = run ?? start()
      const f: Follower = { at: 0, wants, wake: undefined, closed: false }
      followers.add(f) // counted before any await, so the reader is not stopped under a follower that is attaching
      try {
        await current.started
      } catch {
        followers.delete(f)
        return undefined
      }
      const head = current.base + current.entries.length
      const at = cursor === undefined ? head : current.positions.get(cursor) ?? (notBehind(cursor, current.head) ? head : undefined)
      if (at === undefined || run !== current) {
        followers.delete(f)
        stopIfIdle()
        return undefined
      }
      f.at = at
      const startCursor = cursor ?? current.head
      const close = () => {
        if (f.closed) return
        f.closed = true
        followers.delete(f)
        const w = f.wake
        f.wake = undefined
        w?.()
        stopIfIdle()
      }
      return {
        cursor: startCursor,
        close,
        next: async () => {
          for (;;) {
            if (f.closed || current.failed || run !== current || f.at < current.base) {
              close()
              return "detached"
            }
            const from = f.at - current.base
            if (from < current.entries.length) {
              const taken = current.entries.slice(from)
              f.at += taken.length
              return taken
            }
            await new Promise<void>((r) => (f.wake = r))
          }
        }
      }
    }
  }
}
