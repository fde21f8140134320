/**
 * The task event vocabulary: every transition of a task is one `TaskEvent`, stored in an `Envelope`
 * (the partition log's stream id, the task's history version, the time, and who it belongs to).
 *
 * The Lua scripts write these as JSON; this module is the only place that decodes them, so a reader
 * yields typed events or fails with `CorruptEntry`.
 *
 * Versioning rule: a new field is optional (old entries lack it); a change of meaning is a new tag.
 * Never rename or remove a tag that has been written.
 */
import { Effect, Schema } from "effect"
import { CorruptEntry } from "./StreamError.ts"

/** A task id: safe in a Redis key and free of hash-tag braces. */
export const TaskId = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, {
    message: "a task id is 1-128 characters of letters, digits, '_', '.', ':' or '-'"
  })
)

/** An agent (queue) name: safe in a Redis key. */
export const AgentName = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, {
    message: "an agent name is 1-64 characters of letters, digits, '_', '.' or '-'"
  })
)

export const TaskStatus = Schema.Literals([
  "queued",
  "processing",
  "backoff",
  "waiting",
  "completed",
  "failed",
  "cancelled",
  "expired"
])
export type TaskStatus = typeof TaskStatus.Type

export const terminalStatuses: ReadonlyArray<TaskStatus> = ["completed", "failed", "cancelled", "expired"]
export const isTerminal = (status: TaskStatus): boolean => terminalStatuses.includes(status)

/** How a failed attempt is handled: retried at once, retried after a delay, or the end of the task. */
export const FailureDecision = Schema.Literals(["retry", "backoff", "failed"])
export type FailureDecision = typeof FailureDecision.Type

/** A failure as recorded: a message and the class the worker put it in. */
export const TaskError = Schema.Struct({
  message: Schema.String,
  kind: Schema.String
})
export type TaskError = typeof TaskError.Type

const Lease = Schema.Int

export const TaskEvent = Schema.TaggedUnion({
  TaskEnqueued: {
    payload: Schema.Json,
    maxRetries: Schema.Int
  },
  TaskClaimed: { lease: Lease, worker: Schema.String },
  /** Written to the partition log only (not to the task's history): liveness, not state. */
  TaskHeartbeat: { lease: Lease, worker: Schema.String },
  TaskSteered: { messages: Schema.Array(Schema.Json) },
  TurnCompleted: { lease: Lease, turn: Schema.Int, payload: Schema.Json, steeringApplied: Schema.Int },
  TaskCompleted: {
    lease: Lease,
    output: Schema.Json,
    /** The payload as the final turn left it (e.g. an LLM agent's last model call), when the agent gives it. */
    payload: Schema.optionalKey(Schema.Json),
    steeringApplied: Schema.Int,
    steeringUnapplied: Schema.Int
  },
  TaskFailed: {
    lease: Lease,
    error: TaskError,
    decision: FailureDecision,
    retries: Schema.Int,
    retryAt: Schema.optionalKey(Schema.Number)
  },
  TaskCancelRequested: {},
  TaskCancelled: { lease: Schema.optionalKey(Lease) },
  TaskReleased: { lease: Lease },
  TaskRecovered: { lease: Lease, decision: Schema.Literals(["requeued", "failed"]), retries: Schema.Int },
  TaskBackoffElapsed: {},
  /** `lease`: the task's last lease, so an expired task still answers a stale worker with it. */
  TaskExpired: { lease: Schema.optionalKey(Lease) }
})
export type TaskEvent = typeof TaskEvent.Type
export type TaskEventTag = TaskEvent["_tag"]

/** One recorded event with its place in the logs. */
export const Envelope = Schema.Struct({
  /** The partition log's stream id of this entry (also its position in time). */
  id: Schema.String,
  /** Position in the task's own history, from 1. Heartbeats carry the version they follow. */
  version: Schema.Int,
  /** Milliseconds since the epoch, as stamped by the command. */
  at: Schema.Number,
  taskId: Schema.String,
  agent: Schema.String,
  ownerId: Schema.String,
  event: TaskEvent
})
export type Envelope = typeof Envelope.Type

const decodeEnvelopeJson = Schema.decodeUnknownExit(Schema.fromJsonString(Envelope))

/** Decodes one stored entry (JSON text); the stream id may come from outside the JSON (partition log). */
export const decodeEnvelope = (
  raw: string,
  streamId?: string
): Effect.Effect<Envelope, CorruptEntry> => {
  const text = streamId === undefined ? raw : `{"id":${JSON.stringify(streamId)},${raw.slice(1)}`
  const exit = decodeEnvelopeJson(text)
  return exit._tag === "Success"
    ? Effect.succeed(exit.value)
    : Effect.fail(new CorruptEntry({ entry: raw.slice(0, 200), message: String(exit.cause) }))
}
