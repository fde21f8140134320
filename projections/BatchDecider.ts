/**
 * The batch state machine as a pure decider, like the task decider: `decide(command, state)` gives the
 * events or the rejection, `evolve` folds one event. The batch scripts (`streams/lua/batch_*.lua`) apply the
 * same rules, and `test/streams/BatchStore.model.test.ts` proves they agree.
 *
 * Rules: a batch is created once, with its task ids; each task's end is counted once (a repeated report, or
 * one for a task not in the batch, changes nothing and is rejected); the last end of an active batch completes
 * it (BatchCompleted, with the counts); cancel turns an active batch cancelled (its tasks' ends are still
 * counted, but it never completes); cancelling a cancelled batch is accepted with no event; a completed batch
 * cannot be cancelled.
 */
import type { BatchEvent, BatchStatus, BatchTaskEnd } from "../streams/BatchEvent.ts"

export interface BatchState {
  readonly batchId: string
  readonly agent: string
  readonly ownerId: string
  readonly status: BatchStatus
  readonly taskIds: ReadonlyArray<string>
  /** The end of each task that has ended. */
  readonly ended: Readonly<Record<string, BatchTaskEnd>>
  readonly createdAt: number
  readonly updatedAt: number
  readonly version: number
}

export type BatchCommand =
  | {
    readonly _tag: "CreateBatch"
    readonly batchId: string
    readonly agent: string
    readonly ownerId: string
    readonly taskIds: ReadonlyArray<string>
    readonly now: number
  }
  | { readonly _tag: "BatchTaskFinished"; readonly batchId: string; readonly taskId: string; readonly status: BatchTaskEnd; readonly now: number }
  | { readonly _tag: "CancelBatch"; readonly batchId: string; readonly now: number }

export type BatchRejection =
  | { readonly _tag: "BatchNotFound" }
  | { readonly _tag: "BatchAlreadyExists" }
  | { readonly _tag: "BatchAlreadyFinished" }
  /** A task that is not in the batch, or whose end was already counted. */
  | { readonly _tag: "TaskNotCounted"; readonly taskId: string; readonly reason: "notInBatch" | "alreadyCounted" }

export type BatchDecision =
  | { readonly _tag: "Accepted"; readonly events: ReadonlyArray<BatchEvent> }
  | { readonly _tag: "Rejected"; readonly rejection: BatchRejection }

const accept = (...events: ReadonlyArray<BatchEvent>): BatchDecision => ({ _tag: "Accepted", events })
const reject = (rejection: BatchRejection): BatchDecision => ({ _tag: "Rejected", rejection })

/** How many tasks ended each way. */
export const batchCounts = (state: BatchState) => {
  const counts = { completed: 0, failed: 0, cancelled: 0, expired: 0 }
  for (const end of Object.values(state.ended)) counts[end]++
  return counts
}

export const decideBatch = (command: BatchCommand, state: BatchState | undefined): BatchDecision => {
  switch (command._tag) {
    case "CreateBatch":
      return state === undefined
        ? accept({ _tag: "BatchCreated", agent: command.agent, taskIds: command.taskIds })
        : reject({ _tag: "BatchAlreadyExists" })
    case "BatchTaskFinished": {
      if (state === undefined) return reject({ _tag: "BatchNotFound" })
      if (!state.taskIds.includes(command.taskId)) return reject({ _tag: "TaskNotCounted", taskId: command.taskId, reason: "notInBatch" })
      if (state.ended[command.taskId] !== undefined) {
        return reject({ _tag: "TaskNotCounted", taskId: command.taskId, reason: "alreadyCounted" })
      }
      const finished = Object.keys(state.ended).length + 1
      const total = state.taskIds.length
      const progress: BatchEvent = { _tag: "BatchTaskFinished", taskId: command.taskId, status: command.status, finished, total }
      if (finished < total || state.status !== "active") return accept(progress)
      const counts = batchCounts(state)
      counts[command.status]++
      return accept(progress, { _tag: "BatchCompleted", ...counts })
    }
    case "CancelBatch":
      if (state === undefined) return reject({ _tag: "BatchNotFound" })
      if (state.status === "cancelled") return accept()
      if (state.status === "completed") return reject({ _tag: "BatchAlreadyFinished" })
      return accept({ _tag: "BatchCancelled" })
  }
}

export const evolveBatch = (
  state: BatchState | undefined,
  envelope: { readonly at: number; readonly batchId: string; readonly ownerId: string; readonly event: BatchEvent }
): BatchState | undefined => {
  const { at, event } = envelope
  if (event._tag === "BatchCreated") {
    return {
      batchId: envelope.batchId,
      agent: event.agent,
      ownerId: envelope.ownerId,
      status: "active",
      taskIds: event.taskIds,
      ended: {},
      createdAt: at,
      updatedAt: at,
      version: 1
    }
  }
  if (state === undefined) return state
  const next = { ...state, updatedAt: at, version: state.version + 1 }
  switch (event._tag) {
    case "BatchTaskFinished":
      return { ...next, ended: { ...state.ended, [event.taskId]: event.status } }
    case "BatchCompleted":
      return { ...next, status: "completed" }
    case "BatchCancelled":
      return { ...next, status: "cancelled" }
  }
}
