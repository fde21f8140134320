/**
 * The follow-up step of a task, for what one script cannot do because it crosses partitions (slots): when a
 * task ends, its parent hears of it (ChildFinished), its batch counts it (BatchTaskFinished) and its
 * unfinished children are cancelled; a child whose wait item timed out is cancelled too.
 *
 * Reliable by an outbox: the script that makes a step due (a terminal transition of a task with a parent,
 * batch or children; a timeout of child items) adds the task to its partition's `outbox` in the same atomic
 * step. Whoever made the commit runs `settle` right after it (the worker, the client that cancelled,
 * maintenance); maintenance sweeps the outbox for steps nobody ran (a crash). Every action is idempotent — a
 * parent accepts each child's end once, cancelling a finished task changes nothing — so running a step twice
 * is harmless. The task leaves the outbox only if it did not change while the step ran (`settled` compares
 * the version), so a later transition's step is never lost. See docs/adr/0006-cross-slot-follow-up-steps.md.
 */
import { Clock, Effect } from "effect"
import type { TaskCommand, TaskState } from "../projections/TaskDecider.ts"
import type { RedisError } from "../streams/StreamError.ts"
import { type ChildEnd, isTerminal } from "../streams/TaskEvent.ts"
import { BATCH_RETENTION_SECONDS } from "../streams/Keys.ts"
import { TaskStore } from "./TaskStore.ts"

/** Tells a batch that one of its tasks ended; "not counted" (counted already, or unknown) is nothing to do. */
const tellBatch = (batchId: string, taskId: string, status: "completed" | "failed" | "cancelled" | "expired", now: number) =>
  TaskStore.use((store) =>
    store.executeBatch({ _tag: "BatchTaskFinished", batchId, taskId, status, now }, { retentionSeconds: BATCH_RETENTION_SECONDS }).pipe(
      Effect.asVoid,
      Effect.catchTag(["TaskNotCounted", "BatchNotFound", "BatchAlreadyExists", "BatchAlreadyFinished"], () => Effect.void)
    ))

/** How deep one `settle` follows cancelled children into their own children (deeper: the next sweep). */
const MAX_DEPTH = 4

/** The command that tells a task's parent of its end. */
const childFinished = (state: TaskState, status: ChildEnd, now: number): TaskCommand => ({
  _tag: "ChildFinished",
  taskId: state.parentId!,
  childId: state.taskId,
  status,
  ...(status === "completed" && state.output !== undefined ? { output: state.output } : {}),
  ...(status === "failed" && state.error !== undefined ? { error: state.error } : {}),
  now
})

/** What the step does for a task's state: tell its parent, cancel its children. */
export const followUpCommands = (state: TaskState, now: number): ReadonlyArray<TaskCommand> => {
  const ended = isTerminal(state.status)
  const commands: Array<TaskCommand> = []
  if (ended && state.parentId !== undefined && state.status !== "expired") {
    commands.push(childFinished(state, state.status as ChildEnd, now))
  }
  for (const [id, child] of Object.entries(state.children)) {
    if ((ended && child.end === undefined) || child.end === "timedOut") commands.push({ _tag: "Cancel", taskId: id, now })
  }
  return commands
}

/** An expired task (hot data gone) still tells its parent and batch, from its history's first event. */
const settleExpired = (taskId: string) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    if ((yield* store.getStatus(taskId)) !== "expired") return
    const [first] = yield* store.getHistory(taskId, { start: 0, count: 1 }).pipe(Effect.orElseSucceed(() => []))
    if (first?.event._tag !== "TaskEnqueued") return
    const now = yield* Clock.currentTimeMillis
    if (first.event.parentId !== undefined) {
      yield* store.execute({ _tag: "ChildFinished", taskId: first.event.parentId, childId: taskId, status: "expired", now }).pipe(
        Effect.catchTag("RedisError", Effect.fail),
        Effect.catch(() => Effect.void)
      )
    }
    if (first.event.batchId !== undefined) yield* tellBatch(first.event.batchId, taskId, "expired", now)
  })

/**
 * Runs the follow-up step of a task now; safe to run at any time, any number of times. Cancelled children are
 * settled in turn (their own children, up to a depth; the sweep does the rest).
 */
export const settle = (taskId: string, depth = 0): Effect.Effect<void, RedisError, TaskStore> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    for (let round = 0; round < 3; round++) {
      const state = yield* store.getState(taskId)
      if (state === undefined) {
        yield* settleExpired(taskId).pipe(Effect.catchTag("RedisError", Effect.fail), Effect.catch(() => Effect.void))
        yield* store.settled(taskId, undefined)
        return
      }
      const now = yield* Clock.currentTimeMillis
      const commands = followUpCommands(state, now)
      // Rejections are expected (the parent ended or heard already, the child ended already): nothing to do.
      const outcomes = yield* store.executeMany(commands.map((command) => ({ command })))
      if (isTerminal(state.status) && state.status !== "expired" && state.batchId !== undefined) {
        yield* tellBatch(state.batchId, taskId, state.status as ChildEnd, now)
      }
      if (depth < MAX_DEPTH) {
        for (const [i, command] of commands.entries()) {
          const outcome = outcomes[i]!
          if (command._tag === "Cancel" && "values" in outcome && outcome.values[0] === "TaskCancelled") {
            yield* settle(command.taskId, depth + 1)
          }
        }
      }
      if (yield* store.settled(taskId, state.version)) return
    }
  })
