/**
 * The completion observer: its own connection doing blocking XREAD on a system's event stream from the
 * stream's current end, calling back with each final completion and the time it was seen. Both systems
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

export const observeCompletions = async (
  port: number,
  source: CompletionSource,
  onComplete: (i: number, at: number) => void
): Promise<Observer> => {
  const conn = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: null })
  conn.on("error", () => {})
  const last = (await conn.xrevrange(source.stream, "+", "-", "COUNT", 1)) as Array<[string, Array<string>]>
  let cursor = last[0]?.[0] ?? "0-0"
  let seen = 0
  let stopped = false
  const waiters: Array<{ count: number; resolve: () => void }> = []

  const loop = async () => {
    while (!stopped) {
      let reply: XReadReply
      try {
        reply = (await conn.xread("COUNT", 1000, "BLOCK", 1000, "STREAMS", source.stream, cursor)) as XReadReply
      } catch (e) {
        if (stopped) return
        throw e
      }
      const at = performance.now()
      for (const [id, fields] of reply?.[0]?.[1] ?? []) {
        cursor = id
        const i = source.parse(fields)
        if (i === undefined) continue
        seen++
        onComplete(i, at)
      }
      for (let k = waiters.length - 1; k >= 0; k--) {
        if (seen >= waiters[k]!.count) waiters.splice(k, 1)[0]!.resolve()
      }
    }
  }
  void loop().catch((e) => console.error(`observer failed: ${String(e)}`))

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
      conn.disconnect()
    }
  }
}
