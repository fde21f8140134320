/**
 * The completion observer: its own connection doing blocking XREAD on a system's event stream from the
 * stream's current end (one connection per stream when there are several, e.g. one partition log per
 * partition), calling back with each final completion and the time it was seen. Both systems
 * already write these streams; the observer only reads them (its XREAD shows up in both sides'
 * command statistics alike).
 */
import { Redis } from "ioredis"
import type { CompletionSource } from "./system.ts"

export interface Observer {
  /** Resolves when `count` completions were seen in total; rejects after `timeoutMs`. */
  readonly waitFor: (count: number, timeoutMs: number) => Promise<void>
  readonly seen: () => number
  readonly stop: () => void
}

type XReadReply = Array<[string, Array<[string, Array<string>]>]> | null

/** A stream to watch and the port of the server that holds it (on a Cluster: the master of its slot). */
export interface WatchedStream {
  readonly port: number
  readonly stream: string
}

/**
 * Watches several streams, each with its own connection and blocking XREAD (one XREAD cannot span
 * Cluster slots), from each stream's current end. `onEntry` sees every entry with the time it was read
 * and returns whether it was a completion; `waitFor` counts completions over all streams.
 */
export const observeStreams = async (
  streams: ReadonlyArray<WatchedStream>,
  onEntry: (fields: ReadonlyArray<string>, at: number) => boolean
): Promise<Observer> => {
  let seen = 0
  let stopped = false
  const waiters: Array<{ count: number; resolve: () => void }> = []
  const conns: Array<Redis> = []

  const watch = async ({ port, stream }: WatchedStream) => {
    const conn = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: null })
    conn.on("error", () => {})
    conns.push(conn)
    const last = (await conn.xrevrange(stream, "+", "-", "COUNT", 1)) as Array<[string, Array<string>]>
    let cursor = last[0]?.[0] ?? "0-0"
    return async () => {
      while (!stopped) {
        let reply: XReadReply
        try {
          reply = (await conn.xread("COUNT", 1000, "BLOCK", 1000, "STREAMS", stream, cursor)) as XReadReply
        } catch (e) {
          if (stopped) return
          throw e
        }
        const at = performance.now()
        for (const [id, fields] of reply?.[0]?.[1] ?? []) {
          cursor = id
          if (onEntry(fields, at)) seen++
        }
        for (let k = waiters.length - 1; k >= 0; k--) {
          if (seen >= waiters[k]!.count) waiters.splice(k, 1)[0]!.resolve()
        }
      }
    }
  }
  // Every cursor is placed before any loop runs, so nothing written after this call resolves is missed.
  const loops = await Promise.all(streams.map(watch))
  for (const loop of loops) void loop().catch((e) => console.error(`observer failed: ${String(e)}`))

  return {
    seen: () => seen,
    waitFor: (count, timeoutMs) =>
      seen >= count ? Promise.resolve() : new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`timed out: ${seen} of ${count} completions after ${timeoutMs} ms`)),
          timeoutMs
        )
        waiters.push({ count, resolve: () => (clearTimeout(timer), resolve()) })
      }),
    stop: () => {
      stopped = true
      for (const conn of conns) conn.disconnect()
    }
  }
}

/** One system's event stream on one server: calls back with each final completion's job index. */
export const observeCompletions = (
  port: number,
  source: CompletionSource,
  onComplete: (i: number, at: number) => void
): Promise<Observer> =>
  observeStreams([{ port, stream: source.stream }], (fields, at) => {
    const i = source.parse(fields)
    if (i === undefined) return false
    onComplete(i, at)
    return true
  })
