/**
 * The interface both systems are driven through, so every scenario runs the same code against ours and
 * against BullMQ. One `SystemRun` is one fresh queue (namespace) for one measured run.
 *
 * A turn handler is synchronous no-op work: it records timings and says whether the task is done or
 * continues with a new payload (the multi-turn scenario). Completion is observed the same way for both:
 * a blocking XREAD on the system's own event stream (our partition log, BullMQ's `events` stream), so a
 * job counts as complete when another client can see that it completed.
 */
import type { BenchPayload } from "./payload.ts"

export type TurnResult = { readonly _tag: "Done" } | { readonly _tag: "Continue"; readonly payload: BenchPayload }
export type TurnHandler = (payload: BenchPayload) => TurnResult

/** How BullMQ carries a task on to its next turn (see bullmq.ts). */
export type ContinuationMode = "readd" | "moveToWait"

export interface OpenOptions {
  readonly url: string
  readonly port: number
  /** Unique per run: our namespace / BullMQ's queue name. */
  readonly runId: string
  readonly continuation: ContinuationMode
}

export interface CompletionSource {
  /** The stream holding the completion events. */
  readonly stream: string
  /** The job index `i` if this entry is a final completion (the task is done), else undefined. */
  readonly parse: (fields: ReadonlyArray<string>) => number | undefined
}

export interface SystemRun {
  readonly enqueue: (payload: BenchPayload) => Promise<void>
  /** One call, one round trip for the batch (our `enqueueTasks`, BullMQ's `addBulk`). */
  readonly enqueueBulk: (payloads: ReadonlyArray<BenchPayload>) => Promise<void>
  /** Starts a worker running `concurrency` turns at once; resolves once it is started. */
  readonly startWorkers: (concurrency: number, handler: TurnHandler) => Promise<void>
  readonly completions: CompletionSource
  /** Groups a Redis key of this run into a kind (the task or job id replaced by `*`), for memory breakdowns. */
  readonly keyKind: (key: string) => string | undefined
  readonly close: () => Promise<void>
}

export interface System {
  /** Label in the report: "ours", "bullmq", "bullmq (moveToWait)". */
  readonly label: string
  readonly side: "ours" | "bullmq"
  readonly continuation: ContinuationMode
  readonly open: (options: OpenOptions) => Promise<SystemRun>
}
