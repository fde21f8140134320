/**
 * The task state machine as a pure decider: `decide(command, state)` returns the events a command
 * produces or the reason it is rejected; `evolve(state, event)` folds one event into the state.
 *
 * This file is the single statement of the rules. The Lua scripts in `streams/lua/` apply the same
 * rules atomically in Redis, and `test/streams/TaskStore.model.test.ts` proves they agree. `evolve`
 * is also the task-status projection: a task's status hash equals the fold of its history.
 *
 * Invariants kept here:
 * - the lease only grows; every worker command names its lease, and a stale one changes nothing;
 * - terminal states (completed, failed, cancelled, expired) absorb every command: none produces an event,
 *   except Expire, which moves a finished task to expired once (Cancel of a cancelled task is accepted with
 *   no events). An expired task keeps answering as expired, though its hot data is gone;
 * - retries never exceed `maxRetries`; every failed attempt is an event with its error;
 * - waiting: a turn may end waiting for deferred results and child tasks (TaskWaiting). Each item gets
 *   exactly one result (ToolResultReceived, ChildTaskFinished or a timeout); the task is queued when none is
 *   outstanding, and the next turn to end (checkpoint, wait or completion) has consumed them;
 * - a parent knows every child before the child exists (ChildTasksSpawned comes before the child's enqueue),
 *   so a child's end is accepted whenever the parent is live — also before the parent parked — and only once.
 * Pure: time, ids and worker identity arrive on the command.
 */
import type {
  ChildEnd,
  Envelope,
  FailureDecision,
  TaskError,
  TaskEvent,
  TaskStatus,
  WaitItem,
  WaitResult
} from "../streams/TaskEvent.ts"
import { isTerminal } from "../streams/TaskEvent.ts"
import { applyPayloadDelta, type PayloadDelta } from "./PayloadDelta.ts"

export interface TaskState {
  readonly taskId: string
  readonly agent: string
  readonly ownerId: string
  readonly status: TaskStatus
  /** The agent context, checkpointed after every turn. */
  readonly payload: unknown
  readonly output?: unknown
  readonly error?: TaskError
  /** Fencing token: grows by one on every claim. */
  readonly lease: number
  readonly worker?: string
  /** Failed attempts that were retried (or the last one that was not). */
  readonly retries: number
  readonly maxRetries: number
  /** Completed turns. */
  readonly turns: number
  readonly cancelRequested: boolean
  /** Steering messages not yet applied by a turn. */
  readonly steering: ReadonlyArray<unknown>
  readonly retryAt?: number
  readonly createdAt: number
  readonly updatedAt: number
  /** Number of events in the task's history. */
  readonly version: number
  /** The task that spawned this one. */
  readonly parentId?: string
  readonly batchId?: string
  /** Every child this task spawned; `end` once the child reported (or its wait item timed out). */
  readonly children: Readonly<Record<string, ChildRef>>
  /** The current wait's items: set by TaskWaiting, kept until the next turn's commit consumes their results. */
  readonly wait: ReadonlyArray<WaitItem>
  /** Results received and not yet consumed by a turn (a child's may come before the wait that names it). */
  readonly results: Readonly<Record<string, WaitResult>>
  /** While waiting: the earliest timeout among the outstanding items. */
  readonly deadline?: number
}

export interface ChildRef {
  readonly agent: string
  readonly end?: ChildEnd | "timedOut"
}

export type State = TaskState | undefined

/**
 * The payload a turn ended with, as its event records it: whole, or as what changed since the task's current
 * payload (the worker's claim read it; `PayloadDelta.ts`).
 */
export type Checkpoint =
  | { readonly payload: unknown; readonly payloadDelta?: undefined }
  | { readonly payloadDelta: PayloadDelta; readonly payload?: undefined }

/** A completion that records no payload (the agent gave none with its output). */
export type NoCheckpoint = { readonly payload?: undefined; readonly payloadDelta?: undefined }

/**
 * The event fields of a checkpoint: `payload` or `payloadDelta`; none for a completion without a payload (a
 * turn's checkpoint without one stores null, as JSON has no undefined).
 */
const checkpointFields = (c: Checkpoint | NoCheckpoint, required: boolean) =>
  c.payloadDelta !== undefined
    ? { payloadDelta: c.payloadDelta as never }
    : c.payload !== undefined || required
    ? { payload: (c.payload ?? null) as never }
    : {}

/** The payload after an event that checkpoints one (`payload` or `payloadDelta`); else `payload`. */
export const checkpointed = (payload: unknown, event: { readonly payload?: unknown; readonly payloadDelta?: PayloadDelta }) =>
  event.payloadDelta !== undefined ? applyPayloadDelta(payload, event.payloadDelta) : event.payload !== undefined ? event.payload : payload

export type TaskCommand =
  | {
    readonly _tag: "Enqueue"
    readonly taskId: string
    readonly agent: string
    readonly ownerId: string
    readonly payload: unknown
    readonly maxRetries: number
    readonly parentId?: string
    readonly batchId?: string
    readonly now: number
  }
  | { readonly _tag: "Claim"; readonly taskId: string; readonly lease: number; readonly worker: string; readonly now: number }
  | { readonly _tag: "Heartbeat"; readonly taskId: string; readonly lease: number; readonly worker: string; readonly now: number }
  | ({
    readonly _tag: "CompleteTurn"
    readonly taskId: string
    readonly lease: number
    readonly steeringApplied: number
    readonly now: number
  } & Checkpoint)
  | ({
    readonly _tag: "Complete"
    readonly taskId: string
    readonly lease: number
    readonly output: unknown
    readonly steeringApplied: number
    readonly now: number
  } & (Checkpoint | NoCheckpoint))
  | {
    readonly _tag: "Fail"
    readonly taskId: string
    readonly lease: number
    readonly error: TaskError
    /** `fatal`: no retry. `retry`: requeue now. `backoff`: requeue at `retryAt`. */
    readonly retry: "fatal" | "retry" | "backoff"
    readonly retryAt: number
    readonly now: number
  }
  | { readonly _tag: "AcknowledgeCancel"; readonly taskId: string; readonly lease: number; readonly now: number }
  | { readonly _tag: "Release"; readonly taskId: string; readonly lease: number; readonly now: number }
  | { readonly _tag: "Cancel"; readonly taskId: string; readonly now: number }
  | { readonly _tag: "Steer"; readonly taskId: string; readonly messages: ReadonlyArray<unknown>; readonly now: number }
  | { readonly _tag: "Recover"; readonly taskId: string; readonly lease: number; readonly now: number }
  | { readonly _tag: "WakeUp"; readonly taskId: string; readonly now: number }
  | { readonly _tag: "Expire"; readonly taskId: string; readonly now: number }
  /** A turn ends waiting for `pending` (its payload checkpointed, as CompleteTurn does). */
  | ({
    readonly _tag: "Wait"
    readonly taskId: string
    readonly lease: number
    readonly steeringApplied: number
    readonly pending: ReadonlyArray<WaitItem>
    readonly now: number
  } & Checkpoint)
  /** A turn registers the child tasks it is about to enqueue (already known ones are skipped). */
  | {
    readonly _tag: "SpawnChildren"
    readonly taskId: string
    readonly lease: number
    readonly children: ReadonlyArray<{ readonly id: string; readonly agent: string }>
    readonly now: number
  }
  /** A client delivers a deferred result; `token` is checked when given (HTTP), trusted callers omit it. */
  | {
    readonly _tag: "DeliverResult"
    readonly taskId: string
    readonly id: string
    readonly result: unknown
    readonly token?: string
    readonly now: number
  }
  /** A child's end, delivered to its parent (`taskId`) by the follow-up step after the child's terminal commit. */
  | {
    readonly _tag: "ChildFinished"
    readonly taskId: string
    readonly childId: string
    readonly status: ChildEnd
    readonly output?: unknown
    readonly error?: TaskError
    readonly now: number
  }
  /** Maintenance: wait items past their timeout. */
  | { readonly _tag: "TimeoutWait"; readonly taskId: string; readonly now: number }

export type TaskCommandTag = TaskCommand["_tag"]

/** Why a command changed nothing. Each maps to a typed error at the API edge. */
export type Rejection =
  | { readonly _tag: "TaskNotFound" }
  | { readonly _tag: "TaskAlreadyExists" }
  | { readonly _tag: "TaskAlreadyFinished"; readonly status: TaskStatus }
  /** A worker command whose lease is not the task's current processing lease (or a stale queue entry). */
  | { readonly _tag: "StaleLease"; readonly currentLease: number; readonly status: TaskStatus }
  /** A maintenance command that finds nothing to do (not due, or no longer in that state). */
  | { readonly _tag: "NotDue"; readonly status: TaskStatus }
  | { readonly _tag: "InvalidSteeringCount"; readonly pending: number }
  /** A delivery for an id the task's wait does not name (or, for a child, a child it never spawned). */
  | { readonly _tag: "ResultNotPending"; readonly id: string; readonly status: TaskStatus }
  /** A second delivery for the same wait item (or a second end of the same child). */
  | { readonly _tag: "ResultAlreadyReceived"; readonly id: string }
  | { readonly _tag: "InvalidResultToken"; readonly id: string }
  /** A turn's wait that cannot be kept: no items, an id twice, a child item that is no (unreported) child, a result item named like a child. */
  | { readonly _tag: "InvalidWait"; readonly id: string; readonly reason: "empty" | "duplicate" | "notAChild" | "isAChild" }

export type Decision =
  | { readonly _tag: "Accepted"; readonly events: ReadonlyArray<TaskEvent> }
  | { readonly _tag: "Rejected"; readonly rejection: Rejection }

const accept = (...events: ReadonlyArray<TaskEvent>): Decision => ({ _tag: "Accepted", events })
const reject = (rejection: Rejection): Decision => ({ _tag: "Rejected", rejection })

/** The live processing state under `lease`, or the rejection a worker command gets. */
const requireLease = (state: State, lease: number): TaskState | Decision => {
  if (state === undefined) return reject({ _tag: "TaskNotFound" })
  if (state.status !== "processing" || state.lease !== lease) {
    return reject({ _tag: "StaleLease", currentLease: state.lease, status: state.status })
  }
  return state
}
const isDecision = (x: TaskState | Decision): x is Decision => "_tag" in x

const steeringCount = (state: TaskState, applied: number): Decision | undefined =>
  applied < 0 || applied > state.steering.length || !Number.isInteger(applied)
    ? reject({ _tag: "InvalidSteeringCount", pending: state.steering.length })
    : undefined

const failureDecision = (state: TaskState, retry: "fatal" | "retry" | "backoff"): FailureDecision =>
  retry === "fatal" || state.retries >= state.maxRetries ? "failed" : retry

/** The items of a wait that have no result yet. */
export const outstanding = (wait: ReadonlyArray<WaitItem>, results: TaskState["results"]): ReadonlyArray<WaitItem> =>
  wait.filter((item) => results[item.id] === undefined)

/** The earliest timeout among the outstanding items, if any has one. */
const deadlineOf = (wait: ReadonlyArray<WaitItem>, results: TaskState["results"]): number | undefined =>
  outstanding(wait, results).reduce<number | undefined>(
    (d, item) => item.timeoutAt === undefined || (d !== undefined && d <= item.timeoutAt) ? d : item.timeoutAt,
    undefined
  )

/** The results left once a turn's commit has consumed those of the wait it ran after. */
const consumeWait = (state: TaskState): TaskState["results"] => {
  const results = { ...state.results }
  for (const item of state.wait) delete results[item.id]
  return results
}

const invalidWait = (state: TaskState, results: TaskState["results"], pending: ReadonlyArray<WaitItem>): Rejection | undefined => {
  if (pending.length === 0) return { _tag: "InvalidWait", id: "", reason: "empty" }
  const seen = new Set<string>()
  for (const item of pending) {
    if (seen.has(item.id)) return { _tag: "InvalidWait", id: item.id, reason: "duplicate" }
    seen.add(item.id)
    const child = state.children[item.id]
    if (item.kind === "child") {
      // A child item waits for a spawned child whose end is not yet consumed by an earlier turn.
      if (child === undefined || (child.end !== undefined && results[item.id] === undefined)) {
        return { _tag: "InvalidWait", id: item.id, reason: "notAChild" }
      }
    } else if (child !== undefined) {
      return { _tag: "InvalidWait", id: item.id, reason: "isAChild" }
    }
  }
  return undefined
}

/** Whether a live task that gets a result for `id` now has nothing outstanding (so it resumes). */
const resumesWith = (state: TaskState, id: string): boolean =>
  state.status === "waiting" && outstanding(state.wait, state.results).every((item) => item.id === id)

export const decide = (command: TaskCommand, state: State): Decision => {
  switch (command._tag) {
    case "Enqueue":
      return state === undefined
        ? accept({
          _tag: "TaskEnqueued",
          payload: command.payload as never,
          maxRetries: command.maxRetries,
          ...(command.parentId !== undefined ? { parentId: command.parentId } : {}),
          ...(command.batchId !== undefined ? { batchId: command.batchId } : {})
        })
        : reject({ _tag: "TaskAlreadyExists" })
    case "Claim":
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      return state.status === "queued" && state.lease === command.lease
        ? accept({ _tag: "TaskClaimed", lease: state.lease + 1, worker: command.worker })
        : reject({ _tag: "StaleLease", currentLease: state.lease, status: state.status })
    case "Heartbeat": {
      // Accepted under a live lease with no event: a heartbeat renews the lease (its time, outside the state)
      // and changes nothing a fold could see (ADR 0022).
      const live = requireLease(state, command.lease)
      return isDecision(live) ? live : accept()
    }
    case "CompleteTurn": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      if (live.cancelRequested) return accept({ _tag: "TaskCancelled", lease: live.lease })
      return steeringCount(live, command.steeringApplied) ?? accept({
        _tag: "TurnCompleted",
        lease: live.lease,
        turn: live.turns + 1,
        ...checkpointFields(command, true),
        steeringApplied: command.steeringApplied
      })
    }
    case "Complete": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      if (live.cancelRequested) return accept({ _tag: "TaskCancelled", lease: live.lease })
      return steeringCount(live, command.steeringApplied) ?? accept({
        _tag: "TaskCompleted",
        lease: live.lease,
        output: command.output as never,
        ...checkpointFields(command, false),
        steeringApplied: command.steeringApplied,
        steeringUnapplied: live.steering.length - command.steeringApplied
      })
    }
    case "Fail": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      if (live.cancelRequested) return accept({ _tag: "TaskCancelled", lease: live.lease })
      const decision = failureDecision(live, command.retry)
      return accept({
        _tag: "TaskFailed",
        lease: live.lease,
        error: command.error,
        decision,
        retries: decision === "failed" ? live.retries : live.retries + 1,
        ...(decision === "backoff" ? { retryAt: command.retryAt } : {})
      })
    }
    case "AcknowledgeCancel": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      return live.cancelRequested
        ? accept({ _tag: "TaskCancelled", lease: live.lease })
        : reject({ _tag: "NotDue", status: live.status })
    }
    case "Release": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      return live.cancelRequested
        ? accept({ _tag: "TaskCancelled", lease: live.lease })
        : accept({ _tag: "TaskReleased", lease: live.lease })
    }
    case "Cancel":
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      if (state.status === "cancelled") return accept()
      if (isTerminal(state.status)) return reject({ _tag: "TaskAlreadyFinished", status: state.status })
      if (state.status === "processing") return state.cancelRequested ? accept() : accept({ _tag: "TaskCancelRequested" })
      return accept({ _tag: "TaskCancelled" })
    case "Steer":
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      if (isTerminal(state.status)) return reject({ _tag: "TaskAlreadyFinished", status: state.status })
      return accept({ _tag: "TaskSteered", messages: command.messages as never })
    case "Recover": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      if (live.cancelRequested) return accept({ _tag: "TaskCancelled", lease: live.lease })
      return live.retries >= live.maxRetries
        ? accept({ _tag: "TaskRecovered", lease: live.lease, decision: "failed", retries: live.retries })
        : accept({ _tag: "TaskRecovered", lease: live.lease, decision: "requeued", retries: live.retries + 1 })
    }
    case "WakeUp":
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      return state.status === "backoff" && (state.retryAt ?? 0) <= command.now
        ? accept({ _tag: "TaskBackoffElapsed" })
        : reject({ _tag: "NotDue", status: state.status })
    case "Expire":
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      return isTerminal(state.status) && state.status !== "expired"
        ? accept({ _tag: "TaskExpired", lease: state.lease })
        : reject({ _tag: "NotDue", status: state.status })
    case "Wait": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      if (live.cancelRequested) return accept({ _tag: "TaskCancelled", lease: live.lease })
      const badSteering = steeringCount(live, command.steeringApplied)
      if (badSteering !== undefined) return badSteering
      const results = consumeWait(live)
      const invalid = invalidWait(live, results, command.pending)
      if (invalid !== undefined) return reject(invalid)
      const deadline = deadlineOf(command.pending, results)
      return accept({
        _tag: "TaskWaiting",
        lease: live.lease,
        turn: live.turns + 1,
        ...checkpointFields(command, true),
        steeringApplied: command.steeringApplied,
        pending: command.pending,
        ...(deadline !== undefined ? { deadline } : {}),
        resumed: outstanding(command.pending, results).length === 0
      })
    }
    case "SpawnChildren": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      const fresh = command.children.filter((c, i) =>
        live.children[c.id] === undefined && command.children.findIndex((d) => d.id === c.id) === i
      )
      return fresh.length === 0 ? accept() : accept({ _tag: "ChildTasksSpawned", lease: live.lease, children: fresh })
    }
    case "DeliverResult": {
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      if (isTerminal(state.status)) return reject({ _tag: "TaskAlreadyFinished", status: state.status })
      const item = state.wait.find((i) => i.id === command.id && i.kind === "result")
      if (item === undefined) return reject({ _tag: "ResultNotPending", id: command.id, status: state.status })
      if (command.token !== undefined && item.token !== command.token) return reject({ _tag: "InvalidResultToken", id: command.id })
      if (state.results[command.id] !== undefined) return reject({ _tag: "ResultAlreadyReceived", id: command.id })
      return accept({ _tag: "ToolResultReceived", id: command.id, result: command.result as never, resumed: resumesWith(state, command.id) })
    }
    case "ChildFinished": {
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      if (isTerminal(state.status)) return reject({ _tag: "TaskAlreadyFinished", status: state.status })
      const child = state.children[command.childId]
      if (child === undefined) return reject({ _tag: "ResultNotPending", id: command.childId, status: state.status })
      if (child.end !== undefined) return reject({ _tag: "ResultAlreadyReceived", id: command.childId })
      return accept({
        _tag: "ChildTaskFinished",
        childId: command.childId,
        agent: child.agent,
        status: command.status,
        ...(command.output !== undefined ? { output: command.output as never } : {}),
        ...(command.error !== undefined ? { error: command.error } : {}),
        resumed: resumesWith(state, command.childId)
      })
    }
    case "TimeoutWait": {
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      if (state.status !== "waiting") return reject({ _tag: "NotDue", status: state.status })
      const open = outstanding(state.wait, state.results)
      const due = open.filter((item) => item.timeoutAt !== undefined && item.timeoutAt <= command.now)
      if (due.length === 0) return reject({ _tag: "NotDue", status: state.status })
      const decision = due.some((item) => (item.onTimeout ?? "fail") === "fail")
        ? "failed"
        : due.length === open.length
        ? "resumed"
        : "waiting"
      return accept({ _tag: "TaskWaitTimedOut", ids: due.map((item) => item.id), decision })
    }
  }
}

/** The error of a task whose wait timed out with `onTimeout: "fail"`. */
export const waitTimeoutError = (ids: ReadonlyArray<string>): TaskError => ({
  message: `timed out waiting for ${ids.join(", ")}`,
  kind: "wait_timeout"
})

/** Folds one event (with its envelope's time and identity) into the state. */
export const evolve = (state: State, envelope: Pick<Envelope, "at" | "taskId" | "agent" | "ownerId" | "event">): State => {
  const { at, event } = envelope
  if (event._tag === "TaskEnqueued") {
    return {
      taskId: envelope.taskId,
      agent: envelope.agent,
      ownerId: envelope.ownerId,
      status: "queued",
      payload: event.payload,
      lease: 0,
      retries: 0,
      maxRetries: event.maxRetries,
      turns: 0,
      cancelRequested: false,
      steering: [],
      createdAt: at,
      updatedAt: at,
      version: 1,
      ...(event.parentId !== undefined ? { parentId: event.parentId } : {}),
      ...(event.batchId !== undefined ? { batchId: event.batchId } : {}),
      children: {},
      wait: [],
      results: {}
    }
  }
  if (state === undefined) return state
  // Heartbeats are liveness, not history (releases before ADR 0022 logged them): they never change the state.
  if (event._tag === "TaskHeartbeat") return state
  const next = { ...state, updatedAt: at, version: state.version + 1 }
  switch (event._tag) {
    case "TaskClaimed":
      return { ...next, status: "processing", lease: event.lease, worker: event.worker }
    case "TaskSteered":
      return { ...next, steering: [...state.steering, ...event.messages] }
    case "TurnCompleted":
      return {
        ...withoutWorker(next),
        status: "queued",
        payload: checkpointed(state.payload, event),
        turns: event.turn,
        steering: state.steering.slice(event.steeringApplied),
        wait: [],
        results: consumeWait(state)
      }
    case "TaskCompleted":
      return {
        ...finished(withoutWorker(next)),
        status: "completed",
        output: event.output,
        payload: checkpointed(state.payload, event)
      }
    case "TaskFailed": {
      const base = { ...withoutWorker(next), error: event.error, retries: event.retries }
      if (event.decision === "failed") return { ...finished(base), status: "failed" }
      if (event.decision === "retry") return { ...base, status: "queued" }
      return { ...base, status: "backoff", retryAt: event.retryAt ?? at }
    }
    case "TaskCancelRequested":
      return { ...next, cancelRequested: true }
    case "TaskCancelled":
      return { ...finished(withoutWorker(next)), status: "cancelled" }
    case "TaskReleased":
      return { ...withoutWorker(next), status: "queued" }
    case "TaskRecovered":
      return {
        ...withoutWorker(next),
        retries: event.retries,
        ...(event.decision === "failed"
          ? { ...finished(withoutWorker(next)), status: "failed", error: { message: "worker lost its lease", kind: "recovered" } }
          : { status: "queued" })
      }
    case "TaskBackoffElapsed": {
      const { retryAt: _retryAt, ...rest } = next
      return { ...rest, status: "queued" }
    }
    case "TaskExpired": {
      const { output: _output, ...rest } = next
      return { ...rest, status: "expired", payload: null, steering: [] }
    }
    case "TaskWaiting": {
      const results = consumeWait(state)
      return parked({
        ...withoutWorker(next),
        status: event.resumed ? "queued" : "waiting",
        payload: checkpointed(state.payload, event),
        turns: event.turn,
        steering: state.steering.slice(event.steeringApplied),
        wait: event.pending,
        results
      })
    }
    case "ToolResultReceived":
      return parked({
        ...next,
        results: { ...state.results, [event.id]: { kind: "result", result: event.result } },
        ...(event.resumed ? { status: "queued" } : {})
      })
    case "ChildTasksSpawned": {
      const children = { ...state.children }
      for (const c of event.children) children[c.id] = { agent: c.agent }
      return { ...next, children }
    }
    case "ChildTaskFinished": {
      const result: WaitResult = {
        kind: "child",
        agent: event.agent,
        status: event.status,
        ...(event.output !== undefined ? { output: event.output } : {}),
        ...(event.error !== undefined ? { error: event.error } : {})
      }
      return parked({
        ...next,
        children: { ...state.children, [event.childId]: { agent: event.agent, end: event.status } },
        results: { ...state.results, [event.childId]: result },
        ...(event.resumed ? { status: "queued" } : {})
      })
    }
    case "TaskWaitTimedOut": {
      const items = state.wait.filter((item) => event.ids.includes(item.id))
      const children = { ...state.children }
      const results = { ...state.results }
      for (const item of items) {
        const child = children[item.id]
        if (item.kind === "child" && child !== undefined) children[item.id] = { agent: child.agent, end: "timedOut" }
        results[item.id] = { kind: item.kind, timedOut: true }
      }
      if (event.decision === "failed") {
        return { ...finished(next), children, status: "failed", error: waitTimeoutError(event.ids) }
      }
      return parked({ ...next, children, results, ...(event.decision === "resumed" ? { status: "queued" } : {}) })
    }
  }
}

const withoutWorker = (state: TaskState): TaskState => {
  const { worker: _worker, retryAt: _retryAt, ...rest } = state
  return rest
}

/** The deadline kept while waiting: the earliest timeout of the outstanding items (none otherwise). */
const parked = (state: TaskState): TaskState => {
  const { deadline: _deadline, ...rest } = state
  const deadline = state.status === "waiting" ? deadlineOf(state.wait, state.results) : undefined
  return deadline === undefined ? rest : { ...rest, deadline }
}

/** A finished task keeps no pending steering, wait or results (its children stay, for the follow-up step). */
const finished = (state: TaskState): TaskState => {
  const { deadline: _deadline, ...rest } = state
  return { ...rest, steering: [], wait: [], results: {} }
}

/** The state after a whole history. */
export const fold = (
  history: ReadonlyArray<Pick<Envelope, "at" | "taskId" | "agent" | "ownerId" | "event">>
): State => history.reduce<State>(evolve, undefined)
