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
import { Effect, Result, Schema } from "effect"
import { type CorruptEntry, jsonEntryDecoder } from "./StreamError.ts"

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

/** A payload delta as the history stores it (projections/PayloadDelta.ts; `patch` nests one per object field). */
export interface PayloadDeltaJson {
  readonly append?: { readonly [field: string]: ReadonlyArray<Schema.Json> | string }
  readonly patch?: { readonly [field: string]: PayloadDeltaJson }
  readonly set?: { readonly [field: string]: Schema.Json }
  readonly unset?: ReadonlyArray<string>
}

/**
 * A checkpoint told as what changed in the payload since the task's previous payload-carrying event
 * (projections/PayloadDelta.ts, ADR 0018). An event carries `payload` or `payloadDelta`, never both.
 */
export const PayloadDelta: Schema.Codec<PayloadDeltaJson> = Schema.Struct({
  append: Schema.optionalKey(Schema.Record(Schema.String, Schema.Union([Schema.Array(Schema.Json), Schema.String]))),
  patch: Schema.optionalKey(Schema.Record(Schema.String, Schema.suspend((): Schema.Codec<PayloadDeltaJson> => PayloadDelta))),
  set: Schema.optionalKey(Schema.Record(Schema.String, Schema.Json)),
  unset: Schema.optionalKey(Schema.Array(Schema.String))
})

/** How a child task ended, as its parent hears it. */
export const ChildEnd = Schema.Literals(["completed", "failed", "cancelled", "expired"])
export type ChildEnd = typeof ChildEnd.Type

/**
 * One thing a waiting task waits for: a deferred result (`result`, delivered by a client, with the token
 * the delivery must present when it comes over HTTP) or a child task's end (`child`). `timeoutAt` (ms):
 * past it, maintenance times the item out — failing the task (`onTimeout: "fail"`, the default) or giving
 * the next turn a timeout result (`"resume"`).
 */
export const WaitItem = Schema.Struct({
  id: Schema.String,
  kind: Schema.Literals(["result", "child"]),
  token: Schema.optionalKey(Schema.String),
  timeoutAt: Schema.optionalKey(Schema.Int),
  onTimeout: Schema.optionalKey(Schema.Literals(["fail", "resume"]))
})
export type WaitItem = typeof WaitItem.Type

/** What arrived for a wait item: a deferred result, a child's end, or a timeout. */
export const WaitResult = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("result"), result: Schema.Json }),
  Schema.Struct({
    kind: Schema.Literal("child"),
    agent: Schema.String,
    status: ChildEnd,
    output: Schema.optionalKey(Schema.Json),
    error: Schema.optionalKey(TaskError)
  }),
  Schema.Struct({ kind: Schema.Literals(["result", "child"]), timedOut: Schema.Literal(true) })
])
export type WaitResult = typeof WaitResult.Type

export const TaskEvent = Schema.TaggedUnion({
  TaskEnqueued: {
    payload: Schema.Json,
    maxRetries: Schema.Int,
    /** The task that spawned this one (a child task): it hears of this task's end (ChildTaskFinished). */
    parentId: Schema.optionalKey(Schema.String),
    /** The batch this task belongs to. */
    batchId: Schema.optionalKey(Schema.String)
  },
  TaskClaimed: { lease: Lease, worker: Schema.String },
  /** Written to the partition log only (not to the task's history): liveness, not state. */
  /** Written to the partition log by releases before ADR 0022 (no longer written); readers still accept it. */
  TaskHeartbeat: { lease: Lease, worker: Schema.String },
  TaskSteered: { messages: Schema.Array(Schema.Json) },
  /** A turn ended; its payload is checkpointed whole (`payload`) or as what changed (`payloadDelta`). */
  TurnCompleted: {
    lease: Lease,
    turn: Schema.Int,
    payload: Schema.optionalKey(Schema.Json),
    payloadDelta: Schema.optionalKey(PayloadDelta),
    steeringApplied: Schema.Int
  },
  TaskCompleted: {
    lease: Lease,
    output: Schema.Json,
    /** The payload as the final turn left it (e.g. an LLM agent's last model call), when the agent gives it. */
    payload: Schema.optionalKey(Schema.Json),
    payloadDelta: Schema.optionalKey(PayloadDelta),
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
  TaskExpired: { lease: Schema.optionalKey(Lease) },
  /**
   * A turn ended waiting (its payload is checkpointed, as by TurnCompleted) for `pending`; `deadline` is the
   * earliest timeout among the items still outstanding. `resumed`: every item was in already (children that
   * finished before their parent parked), so the task is queued at once.
   */
  TaskWaiting: {
    lease: Lease,
    turn: Schema.Int,
    payload: Schema.optionalKey(Schema.Json),
    payloadDelta: Schema.optionalKey(PayloadDelta),
    steeringApplied: Schema.Int,
    pending: Schema.Array(WaitItem),
    deadline: Schema.optionalKey(Schema.Number),
    resumed: Schema.Boolean
  },
  /** A deferred result arrived (once per wait item). `resumed`: it was the last one outstanding. */
  ToolResultReceived: { id: Schema.String, result: Schema.Json, resumed: Schema.Boolean },
  /** A turn registered child tasks before enqueueing them, so their ends are always expected. */
  ChildTasksSpawned: { lease: Lease, children: Schema.Array(Schema.Struct({ id: Schema.String, agent: Schema.String })) },
  /** A child task ended (once per child), with its output or error. `resumed`: it was the last one outstanding. */
  ChildTaskFinished: {
    childId: Schema.String,
    agent: Schema.String,
    status: ChildEnd,
    output: Schema.optionalKey(Schema.Json),
    error: Schema.optionalKey(TaskError),
    resumed: Schema.Boolean
  },
  /**
   * Wait items passed their timeout. `failed`: one of them says `onTimeout: "fail"`, the task fails; else each
   * gets a timeout result and the task is queued (`resumed`) or keeps waiting for the rest (`waiting`).
   */
  TaskWaitTimedOut: { ids: Schema.Array(Schema.String), decision: Schema.Literals(["failed", "resumed", "waiting"]) }
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

const decodeEnvelopeJson = jsonEntryDecoder(Envelope)

/** Decodes one stored entry (JSON text) synchronously; the stream id may come from outside the JSON (partition log). */
export const decodeEnvelopeResult = (raw: string, streamId?: string): Result.Result<Envelope, CorruptEntry> =>
  decodeEnvelopeJson(streamId === undefined ? raw : `{"id":${JSON.stringify(streamId)},${raw.slice(1)}`)

/** Whose a history is: its first entry names them, and the scripts leave them out of later entries (ADR 0026). */
export type HistoryOwner = Pick<Envelope, "taskId" | "agent" | "ownerId">

/** The opening of a history entry that leaves its owner out: the log entry's id, version and time, then the event. */
const UNNAMED = /^\{"id":"[^"\\]*","version":\d+,"at":\d+,(?="event":)/

/**
 * A history entry's text as a whole envelope: an entry written without its task, agent and owner gets
 * `owner`'s; any other (a history's first entry, an imported one) is returned as it is.
 */
export const namedHistoryEntry = (raw: string, owner: HistoryOwner): string => {
  const m = UNNAMED.exec(raw)
  if (m === null) return raw
  const names = `"taskId":${JSON.stringify(owner.taskId)},"agent":${JSON.stringify(owner.agent)},"ownerId":${
    JSON.stringify(owner.ownerId)
  },`
  return m[0] + names + raw.slice(m[0].length)
}

/** Decodes one history entry, named by `owner` (see `namedHistoryEntry`). */
export const decodeHistoryEntry = (raw: string, owner: HistoryOwner): Result.Result<Envelope, CorruptEntry> =>
  decodeEnvelopeResult(namedHistoryEntry(raw, owner))

/**
 * Decodes consecutive history entries. Without `owner`, `entries` start at the history's first entry, which
 * names the task, agent and owner for the rest; a history whose first entry does not is a `CorruptEntry`.
 */
export const decodeHistory = (
  entries: ReadonlyArray<string>,
  owner?: HistoryOwner
): Effect.Effect<Array<Envelope>, CorruptEntry> =>
  Effect.suspend(() => {
    const out: Array<Envelope> = []
    let named = owner
    for (const raw of entries) {
      const r = named === undefined ? decodeEnvelopeResult(raw) : decodeHistoryEntry(raw, named)
      if (Result.isFailure(r)) return Effect.fail(r.failure)
      out.push(r.success)
      named ??= r.success
    }
    return Effect.succeed(out)
  })

/**
 * What the metrics projector reads of a partition-log entry: the envelope's time, task, agent and the event's
 * tag with the three facts the metrics fold looks at. A Schema of its own, so the projector still refuses a
 * malformed entry (CorruptEntry) but does not validate every payload it carries (most of the decoding time).
 */
export const LogFacts = Schema.Struct({
  at: Schema.Number,
  taskId: Schema.String,
  agent: Schema.String,
  event: Schema.Struct({
    _tag: Schema.Literals(Object.keys(TaskEvent.cases) as Array<TaskEventTag>),
    decision: Schema.optionalKey(Schema.String),
    lease: Schema.optionalKey(Schema.Number),
    resumed: Schema.optionalKey(Schema.Boolean)
  })
})
export type LogFacts = typeof LogFacts.Type

/** Decodes the metrics facts of one partition-log entry (JSON text) synchronously. */
export const decodeLogFacts: (raw: string) => Result.Result<LogFacts, CorruptEntry> = jsonEntryDecoder(LogFacts)

/** `decodeEnvelopeResult` as an Effect. */
export const decodeEnvelope = (raw: string, streamId?: string): Effect.Effect<Envelope, CorruptEntry> =>
  Effect.fromResult(decodeEnvelopeResult(raw, streamId))
