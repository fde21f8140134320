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
 * - retries never exceed `maxRetries`; every failed attempt is an event with its error.
 * Pure: time, ids and worker identity arrive on the command.
 */
import type { Envelope, FailureDecision, TaskError, TaskEvent, TaskStatus } from "../streams/TaskEvent.ts"
import { isTerminal } from "../streams/TaskEvent.ts"

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
}

export type State = TaskState | undefined

export type TaskCommand =
  | {
    readonly _tag: "Enqueue"
    readonly taskId: string
    readonly agent: string
    readonly ownerId: string
    readonly payload: unknown
    readonly maxRetries: number
    readonly now: number
  }
  | { readonly _tag: "Claim"; readonly taskId: string; readonly lease: number; readonly worker: string; readonly now: number }
  | { readonly _tag: "Heartbeat"; readonly taskId: string; readonly lease: number; readonly worker: string; readonly now: number }
  | {
    readonly _tag: "CompleteTurn"
    readonly taskId: string
    readonly lease: number
    readonly payload: unknown
    readonly steeringApplied: number
    readonly now: number
  }
  | {
    readonly _tag: "Complete"
    readonly taskId: string
    readonly lease: number
    readonly output: unknown
    /** The final turn's payload, recorded with the completion when given. */
    readonly payload?: unknown
    readonly steeringApplied: number
    readonly now: number
  }
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

export const decide = (command: TaskCommand, state: State): Decision => {
  switch (command._tag) {
    case "Enqueue":
      return state === undefined
        ? accept({ _tag: "TaskEnqueued", payload: command.payload as never, maxRetries: command.maxRetries })
        : reject({ _tag: "TaskAlreadyExists" })
    case "Claim":
      if (state === undefined) return reject({ _tag: "TaskNotFound" })
      return state.status === "queued" && state.lease === command.lease
        ? accept({ _tag: "TaskClaimed", lease: state.lease + 1, worker: command.worker })
        : reject({ _tag: "StaleLease", currentLease: state.lease, status: state.status })
    case "Heartbeat": {
      const live = requireLease(state, command.lease)
      return isDecision(live) ? live : accept({ _tag: "TaskHeartbeat", lease: live.lease, worker: command.worker })
    }
    case "CompleteTurn": {
      const live = requireLease(state, command.lease)
      if (isDecision(live)) return live
      if (live.cancelRequested) return accept({ _tag: "TaskCancelled", lease: live.lease })
      return steeringCount(live, command.steeringApplied) ?? accept({
        _tag: "TurnCompleted",
        lease: live.lease,
        turn: live.turns + 1,
        payload: command.payload as never,
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
        ...(command.payload !== undefined ? { payload: command.payload as never } : {}),
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
  }
}

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
      version: 1
    }
  }
  if (state === undefined) return state
  // Heartbeats are liveness, not history: they never change the folded state.
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
        payload: event.payload,
        turns: event.turn,
        steering: state.steering.slice(event.steeringApplied)
      }
    case "TaskCompleted":
      return {
        ...withoutWorker(next),
        status: "completed",
        output: event.output,
        steering: [],
        ...(event.payload !== undefined ? { payload: event.payload } : {})
      }
    case "TaskFailed": {
      const base = { ...withoutWorker(next), error: event.error, retries: event.retries }
      if (event.decision === "failed") return { ...base, status: "failed", steering: [] }
      if (event.decision === "retry") return { ...base, status: "queued" }
      return { ...base, status: "backoff", retryAt: event.retryAt ?? at }
    }
    case "TaskCancelRequested":
      return { ...next, cancelRequested: true }
    case "TaskCancelled":
      return { ...withoutWorker(next), status: "cancelled", steering: [] }
    case "TaskReleased":
      return { ...withoutWorker(next), status: "queued" }
    case "TaskRecovered":
      return {
        ...withoutWorker(next),
        retries: event.retries,
        ...(event.decision === "failed"
          ? { status: "failed", steering: [], error: { message: "worker lost its lease", kind: "recovered" } }
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
  }
}

const withoutWorker = (state: TaskState): TaskState => {
  const { worker: _worker, retryAt: _retryAt, ...rest } = state
  return rest
}

/** The state after a whole history. */
export const fold = (
  history: ReadonlyArray<Pick<Envelope, "at" | "taskId" | "agent" | "ownerId" | "event">>
): State => history.reduce<State>(evolve, undefined)
