/**
 * The batch event vocabulary: a batch is a set of tasks of one agent and owner, enqueued together; its
 * progress, completion and cancellation are events in the batch's own log (a list in the partition of the
 * batch id, ADR 0008), decoded here.
 *
 * Versioning rule as for task events: new fields optional, a change of meaning is a new tag.
 */
import { Effect, Schema } from "effect"
import { type CorruptEntry, jsonEntryDecoder } from "./StreamError.ts"

/** How a task of a batch ended, as its batch counts it. */
export const BatchTaskEnd = Schema.Literals(["completed", "failed", "cancelled", "expired"])
export type BatchTaskEnd = typeof BatchTaskEnd.Type

export const BatchStatus = Schema.Literals(["active", "completed", "cancelled"])
export type BatchStatus = typeof BatchStatus.Type

export const BatchEvent = Schema.TaggedUnion({
  BatchCreated: { agent: Schema.String, taskIds: Schema.Array(Schema.String) },
  /** One task of the batch ended (once per task): `finished` of `total` have ended now. */
  BatchTaskFinished: { taskId: Schema.String, status: BatchTaskEnd, finished: Schema.Int, total: Schema.Int },
  /** Every task ended while the batch was active. */
  BatchCompleted: { completed: Schema.Int, failed: Schema.Int, cancelled: Schema.Int, expired: Schema.Int },
  /** The batch was cancelled: its unfinished tasks are being cancelled (their ends are still counted). */
  BatchCancelled: {}
})
export type BatchEvent = typeof BatchEvent.Type

export const BatchEnvelope = Schema.Struct({
  /** Position in the batch's log, from 1. */
  version: Schema.Int,
  at: Schema.Number,
  batchId: Schema.String,
  ownerId: Schema.String,
  event: BatchEvent
})
export type BatchEnvelope = typeof BatchEnvelope.Type

const decodeJson = jsonEntryDecoder(BatchEnvelope)

export const decodeBatchEnvelope = (raw: string): Effect.Effect<BatchEnvelope, CorruptEntry> => Effect.fromResult(decodeJson(raw))
