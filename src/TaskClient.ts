/**
 * The client side of the task API (Effect): enqueue, status, data, history, cancel, steer.
 * Every input is validated here, at the edge, before anything is written; a rejected command writes
 * nothing (the scripts check before they write). Time comes from `Clock`.
 */
import { createHash, randomUUID } from "node:crypto"
import { Clock, Context, Effect, Layer, Result, Schema } from "effect"
import { batchCounts, type BatchState } from "../projections/BatchDecider.ts"
import type { TaskCommand } from "../projections/TaskDecider.ts"
import type { BatchEnvelope } from "../streams/BatchEvent.ts"
import type { CorruptEntry, RedisError } from "../streams/StreamError.ts"
import { type Envelope, TaskId, type TaskStatus } from "../streams/TaskEvent.ts"
import type { EnqueueTarget, Task } from "./Agent.ts"
import {
  type BatchAlreadyFinished,
  BatchNotFound,
  InvalidInput,
  type InvalidResultToken,
  type ResultAlreadyReceived,
  type ResultNotPending,
  type TaskAlreadyExists,
  type TaskAlreadyFinished,
  TaskNotFound,
  type TaskRejected
} from "./Errors.ts"
import { settle } from "./FollowUp.ts"
import { type TaskData, TaskStore } from "./TaskStore.ts"

const decodeTaskId = Schema.decodeUnknownEffect(TaskId)
const checkTaskId = Schema.decodeUnknownResult(TaskId)
const OwnerId = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(256))
const decodeOwnerId = Schema.decodeUnknownEffect(OwnerId)
const checkOwnerId = Schema.decodeUnknownResult(OwnerId)
const SteeringMessages = Schema.Array(Schema.Json).check(Schema.isMinLength(1), Schema.isMaxLength(100))

type EnqueueCommand = Extract<TaskCommand, { readonly _tag: "Enqueue" }>

/** Rejections only a worker's or maintenance's command can get: at the client they are defects. */
const workerRejections = ["StaleLease", "NotDue", "InvalidSteeringCount", "InvalidWait"] as const
const resultRejections = ["ResultNotPending", "ResultAlreadyReceived", "InvalidResultToken"] as const

/** A wait item id (a deferred result's or a child task's): the task id alphabet. */
export const validResultId = (id: unknown): Effect.Effect<string, InvalidInput> =>
  decodeTaskId(id).pipe(
    Effect.mapError((e) => new InvalidInput({ message: `invalid result id: ${e.message}` }))
  )

export const validTaskId = (taskId: unknown): Effect.Effect<string, InvalidInput> =>
  decodeTaskId(taskId).pipe(Effect.mapError((e) => new InvalidInput({ message: `invalid task id: ${e.message}` })))

export interface EnqueueOptions {
  /** Retries for this task; default: the agent's `AgentWorkerConfig.maxRetries` (5). */
  readonly maxRetries?: number
  /**
   * Enqueues at most one task per (agent, key): the task id is derived from the key, so a repeated
   * enqueue returns the first task's id instead of creating another (the task's own id is ignored).
   */
  readonly idempotencyKey?: string
}

export interface BatchOptions {
  /** Default: a random UUID. Give one to make a repeated call finish an interrupted one. */
  readonly batchId?: string
  /** The batch's owner (its events carry it). Default: the first task's owner. */
  readonly ownerId?: string
  readonly maxRetries?: number
}

/** A batch as returned to users (`getBatch`). */
export interface BatchData {
  readonly id: string
  readonly agent: string
  readonly ownerId: string
  readonly status: "active" | "completed" | "cancelled"
  readonly total: number
  /** Tasks that have ended, and how. */
  readonly finished: number
  readonly completed: number
  readonly failed: number
  readonly cancelled: number
  readonly expired: number
  /** finished / total, from 0 to 1. */
  readonly progress: number
  readonly taskIds: ReadonlyArray<string>
  readonly createdAt: number
  readonly updatedAt: number
}

export const batchDataOf = (state: BatchState): BatchData => {
  const counts = batchCounts(state)
  const finished = Object.keys(state.ended).length
  return {
    id: state.batchId,
    agent: state.agent,
    ownerId: state.ownerId,
    status: state.status,
    total: state.taskIds.length,
    finished,
    ...counts,
    progress: state.taskIds.length === 0 ? 1 : finished / state.taskIds.length,
    taskIds: state.taskIds,
    createdAt: state.createdAt,
    updatedAt: state.updatedAt
  }
}

/** The task id an idempotency key stands for (stable across processes and languages). */
export const idempotentTaskId = (agent: string, key: string): string =>
  `idem-${createHash("sha256").update(`${agent}\u0000${key}`).digest("hex").slice(0, 32)}`

export class TaskClient extends Context.Service<TaskClient, {
  readonly enqueue: <P>(
    agent: EnqueueTarget<P>,
    task: Task<P>,
    options?: EnqueueOptions
  ) => Effect.Effect<string, InvalidInput | TaskAlreadyExists | RedisError>
  /**
   * `enqueue` as a Promise, which rejects with the same typed errors: the Orchestrator's `enqueueTask`, one task
   * per call, where running a fiber per call was a tenth of the client's CPU (docs/performance.md, fourteenth round).
   */
  readonly enqueuePromise: <P>(agent: EnqueueTarget<P>, task: Task<P>, options?: EnqueueOptions) => Promise<string>
  /** Enqueues many tasks in one round trip; each succeeds or fails on its own. */
  readonly enqueueMany: <P>(
    agent: EnqueueTarget<P>,
    tasks: ReadonlyArray<Task<P>>,
    options?: Omit<EnqueueOptions, "idempotencyKey">
  ) => Effect.Effect<ReadonlyArray<{ readonly id: string; readonly error?: TaskAlreadyExists | InvalidInput }>, RedisError>
  /**
   * Enqueues tasks of one agent as a batch: the batch (its id, owner and task ids) is recorded first, then the
   * tasks, each knowing its batch, whose ends the batch counts (`getBatch`). Any invalid task refuses the whole
   * batch. With `batchId`, a repeated call finishes an interrupted one (tasks that exist are no error).
   */
  readonly enqueueBatch: <P>(
    agent: EnqueueTarget<P>,
    tasks: ReadonlyArray<Task<P>>,
    options?: BatchOptions
  ) => Effect.Effect<
    { readonly batchId: string; readonly taskIds: ReadonlyArray<string>; readonly errors: ReadonlyArray<{ readonly id: string; readonly error: unknown }> },
    InvalidInput | TaskAlreadyExists | RedisError
  >
  readonly getBatch: (batchId: string) => Effect.Effect<BatchData | null, InvalidInput | RedisError>
  readonly getBatchHistory: (
    batchId: string
  ) => Effect.Effect<ReadonlyArray<BatchEnvelope>, InvalidInput | BatchNotFound | RedisError | CorruptEntry>
  /** Cancels a batch (BatchCancelled) and its unfinished tasks; a cancelled batch's tasks are cancelled again. */
  readonly cancelBatch: (batchId: string) => Effect.Effect<void, InvalidInput | BatchNotFound | BatchAlreadyFinished | RedisError>
  readonly getStatus: (taskId: string) => Effect.Effect<TaskStatus, InvalidInput | TaskNotFound | RedisError>
  readonly getData: (taskId: string) => Effect.Effect<TaskData | null, InvalidInput | RedisError>
  readonly getHistory: (
    taskId: string,
    page?: { readonly start?: number; readonly count?: number }
  ) => Effect.Effect<ReadonlyArray<Envelope>, InvalidInput | TaskNotFound | RedisError | CorruptEntry>
  readonly cancel: (taskId: string) => Effect.Effect<void, InvalidInput | TaskNotFound | TaskAlreadyFinished | RedisError>
  readonly steer: (
    taskId: string,
    messages: ReadonlyArray<unknown>
  ) => Effect.Effect<void, InvalidInput | TaskNotFound | TaskAlreadyFinished | RedisError>
  /**
   * Delivers a deferred result to a waiting task, exactly once per wait item. `token`: the per-call token the
   * task recorded for the item, checked when given (the HTTP route always gives it; in-process callers may not).
   */
  readonly deliverResult: (
    taskId: string,
    resultId: string,
    result: unknown,
    token?: string
  ) => Effect.Effect<
    void,
    | InvalidInput
    | TaskNotFound
    | TaskAlreadyFinished
    | ResultNotPending
    | ResultAlreadyReceived
    | InvalidResultToken
    | RedisError
  >
}>()("factorial/TaskClient") {
  static readonly layer = (defaults: { readonly maxRetries: (agent: string) => number }) =>
    Layer.effect(
      TaskClient,
      Effect.gen(function*() {
        const store = yield* TaskStore

        /** A task's enqueue command, validated; synchronous (no fiber steps per task, which bulk enqueues feel). */
        const prepare = <P>(
          agent: EnqueueTarget<P>,
          task: Task<P>,
          options: EnqueueOptions | undefined,
          now: number
        ): Result.Result<{ readonly command: EnqueueCommand; readonly idempotent: boolean }, InvalidInput> => {
          const invalid = (message: string) => Result.fail(new InvalidInput({ message }))
          const key = options?.idempotencyKey ?? task.idempotencyKey
          if (key !== undefined && (key.length === 0 || key.length > 512)) return invalid("an idempotency key is 1-512 characters")
          let taskId: string
          if (key !== undefined) taskId = idempotentTaskId(agent.name, key)
          else {
            const id = checkTaskId(task.id)
            if (Result.isFailure(id)) return invalid(`invalid task id: ${id.failure.message}`)
            taskId = id.success
          }
          if (task.agent !== agent.name) return invalid(`task ${taskId} belongs to agent ${task.agent}, not ${agent.name}`)
          const ownerId = checkOwnerId(task.ownerId)
          if (Result.isFailure(ownerId)) return invalid(`invalid owner id: ${ownerId.failure.message}`)
          const payload = agent.encodePayload(task.payload)
          if (Result.isFailure(payload)) return Result.fail(payload.failure)
          const maxRetries = options?.maxRetries ?? defaults.maxRetries(agent.name)
          if (!Number.isInteger(maxRetries) || maxRetries < 0) return invalid(`maxRetries must be a non-negative integer, got ${maxRetries}`)
          return Result.succeed({
            command: { _tag: "Enqueue", taskId, agent: agent.name, ownerId: ownerId.success, payload: payload.success, maxRetries, now },
            idempotent: key !== undefined
          })
        }

        /**
         * Enqueues one task as of `now`. Rejects with InvalidInput, TaskAlreadyExists or RedisError, or with another
         * store rejection, which no enqueue can get (`enqueue` makes it a defect). A Promise, not an Effect: the
         * Promise facade calls it once per task, where a fiber per call was a tenth of the client's CPU.
         */
        const enqueueAt = async <P>(agent: EnqueueTarget<P>, task: Task<P>, options: EnqueueOptions | undefined, now: number) => {
          const prepared = prepare(agent, task, options, now)
          if (Result.isFailure(prepared)) throw prepared.failure
          const { command, idempotent } = prepared.success
          try {
            await store.executePromise(command)
          } catch (e) {
            // With an idempotency key, "already exists" is the answer: the first task's id.
            if (!(idempotent && (e as { readonly _tag?: string })._tag === "TaskAlreadyExists")) throw e
          }
          return command.taskId
        }

        const enqueue = <P>(agent: EnqueueTarget<P>, task: Task<P>, options?: EnqueueOptions) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.tryPromise({
              try: () => enqueueAt(agent, task, options, now),
              catch: (e) => e as InvalidInput | TaskRejected | RedisError
            }).pipe(
              Effect.catchTag([...workerRejections, ...resultRejections, "TaskNotFound", "TaskAlreadyFinished"], (e) => Effect.die(e))
            ))

        const enqueuePromise = <P>(agent: EnqueueTarget<P>, task: Task<P>, options?: EnqueueOptions) =>
          enqueueAt(agent, task, options, Date.now())

        /** The valid tasks' commands, prepared one by one as they are read; every result goes to `prepared`. */
        function* validCommands<P>(
          agent: EnqueueTarget<P>,
          tasks: ReadonlyArray<Task<P>>,
          options: EnqueueOptions,
          now: number,
          prepared: Array<ReturnType<typeof prepare<P>>>
        ) {
          for (const task of tasks) {
            const r = prepare(agent, task, options, now)
            prepared.push(r)
            if (r._tag === "Success") yield { command: r.success.command }
          }
        }

        // The batch is the generator's argument, not a variable it closes over: a generator literal made per call
        // that captures it keeps the payloads reachable through young-generation collections (ADR 0025).
        const enqueueMany = Effect.fnUntraced(function*<P>(
          agent: EnqueueTarget<P>,
          tasks: ReadonlyArray<Task<P>>,
          options?: Omit<EnqueueOptions, "idempotencyKey">
        ) {
          // Idempotency keys of a batch are per task (Task.idempotencyKey), never one for the whole batch.
          const perTask = options?.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }
          const now = yield* Clock.currentTimeMillis
          // Prepared as the store sends them: the first pipelines run in Redis while the rest are prepared.
          const prepared: Array<ReturnType<typeof prepare<P>>> = []
          const outcomes = yield* store.executeMany(validCommands(agent, tasks, perTask, now, prepared))
          let next = 0
          return prepared.map((r, i) => {
            if (r._tag === "Failure") return { id: String(tasks[i]!.id), error: r.failure }
            const outcome = outcomes[next++]!
            const id = r.success.command.taskId
            return "values" in outcome || r.success.idempotent ? { id } : { id, error: outcome as TaskAlreadyExists }
          })
        })

        const enqueueBatch = Effect.fnUntraced(function*<P>(agent: EnqueueTarget<P>, tasks: ReadonlyArray<Task<P>>, options: BatchOptions = {}) {
          if (tasks.length === 0 || tasks.length > 10_000) {
            return yield* new InvalidInput({ message: `a batch has 1-10000 tasks, got ${tasks.length}` })
          }
          const batchId = yield* validTaskId(options.batchId ?? randomUUID()).pipe(
            Effect.mapError((e) => new InvalidInput({ message: e.message.replace("task id", "batch id") }))
          )
          const ownerId = yield* decodeOwnerId(options.ownerId ?? tasks[0]!.ownerId).pipe(
            Effect.mapError((e) => new InvalidInput({ message: `invalid owner id: ${e.message}` }))
          )
          const perTask = options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }
          const now = yield* Clock.currentTimeMillis
          // The whole batch is refused if one task is invalid: a batch's tasks are known before it exists.
          const prepared = yield* Effect.forEach(tasks, (task) => Effect.fromResult(prepare(agent, task, perTask, now)))
          const taskIds = prepared.map((p) => p.command.taskId)
          if (new Set(taskIds).size !== taskIds.length) return yield* new InvalidInput({ message: "a batch names a task twice" })
          // The batch first (its task ids), then its tasks; a retry with the same batch id finishes the enqueues.
          yield* store.executeBatch({ _tag: "CreateBatch", batchId, agent: agent.name, ownerId, taskIds, now }).pipe(
            Effect.catchTag("BatchAlreadyExists", () => Effect.void),
            Effect.catchTag(["BatchNotFound", "BatchAlreadyFinished", "TaskNotCounted"], (e) => Effect.die(e))
          )
          const outcomes = yield* store.executeMany(prepared.map((p) => ({ command: { ...p.command, batchId } })))
          const errors = outcomes.flatMap((o, i) =>
            "values" in o || (o._tag === "TaskAlreadyExists" && options.batchId !== undefined) ? [] : [{ id: taskIds[i]!, error: o }]
          )
          return { batchId, taskIds, errors }
        })

        const getBatch = (batchId: string) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(batchId)
            const state = yield* store.getBatchState(id)
            return state === undefined ? null : batchDataOf(state)
          })

        const getBatchHistory = (batchId: string) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(batchId)
            const history = yield* store.getBatchHistory(id)
            if (history.length === 0) return yield* new BatchNotFound({ batchId: id })
            return history
          })

        const cancelBatch = (batchId: string) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(batchId)
            const now = yield* Clock.currentTimeMillis
            yield* store.executeBatch({ _tag: "CancelBatch", batchId: id, now }).pipe(
              Effect.catchTag(["BatchAlreadyExists", "TaskNotCounted"], (e) => Effect.die(e))
            )
            // Then its unfinished tasks (again on a repeated cancel: that finishes one that was interrupted).
            const state = yield* store.getBatchState(id)
            const open = (state?.taskIds ?? []).filter((taskId) => state?.ended[taskId] === undefined)
            const outcomes = yield* store.executeMany(open.map((taskId) => ({ command: { _tag: "Cancel" as const, taskId, now } })))
            yield* Effect.forEach(open, (taskId, i) => {
              const o = outcomes[i]!
              return "values" in o && o.values[0] === "TaskCancelled"
                ? Effect.provideService(settle(taskId), TaskStore, store)
                : Effect.void
            })
          })

        const getStatus = (taskId: string) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(taskId)
            const status = yield* store.getStatus(id)
            if (status === undefined) return yield* new TaskNotFound({ taskId: id })
            return status
          })

        const getData = (taskId: string) =>
          Effect.flatMap(validTaskId(taskId), (id) => Effect.map(store.getTask(id), (t) => t ?? null))

        const getHistory = (taskId: string, page?: { readonly start?: number; readonly count?: number }) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(taskId)
            const history = yield* store.getHistory(id, page)
            if (history.length === 0 && (page?.start ?? 0) === 0) return yield* new TaskNotFound({ taskId: id })
            return history
          })

        /** Cancel and steer can only be rejected as not found or finished; anything else is a defect. */
        const clientCommand = (command: TaskCommand) =>
          store.execute(command).pipe(
            Effect.catchTag([...workerRejections, ...resultRejections, "TaskAlreadyExists"], (e) => Effect.die(e))
          )

        const cancel = (taskId: string) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(taskId)
            const now = yield* Clock.currentTimeMillis
            const accepted = yield* clientCommand({ _tag: "Cancel", taskId: id, now })
            // Cancelled here: this caller runs the follow-up (children cancelled, parent told; else the sweep does).
            if (accepted.values[0] === "TaskCancelled") yield* Effect.provideService(settle(id), TaskStore, store)
          })

        const deliverResult = (taskId: string, resultId: string, result: unknown, token?: string) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(taskId)
            const rid = yield* validResultId(resultId)
            const value = yield* Schema.decodeUnknownEffect(Schema.Json)(result === undefined ? null : result).pipe(
              Effect.mapError((e) => new InvalidInput({ message: `a result must be JSON: ${e.message}` }))
            )
            if (token !== undefined && (token.length === 0 || token.length > 256)) {
              return yield* new InvalidInput({ message: "a result token is 1-256 characters" })
            }
            const now = yield* Clock.currentTimeMillis
            yield* store.execute({
              _tag: "DeliverResult",
              taskId: id,
              id: rid,
              result: value,
              ...(token !== undefined ? { token } : {}),
              now
            }).pipe(Effect.catchTag([...workerRejections, "TaskAlreadyExists", "InvalidWait"], (e) => Effect.die(e)))
          })

        const steer = (taskId: string, messages: ReadonlyArray<unknown>) =>
          Effect.gen(function*() {
            const id = yield* validTaskId(taskId)
            const valid = yield* Schema.decodeUnknownEffect(SteeringMessages)(messages).pipe(
              Effect.mapError((e) => new InvalidInput({ message: `invalid steering messages: ${e.message}` }))
            )
            const now = yield* Clock.currentTimeMillis
            yield* clientCommand({ _tag: "Steer", taskId: id, messages: valid, now })
          })

        return TaskClient.of({
          enqueue,
          enqueuePromise,
          enqueueMany,
          enqueueBatch,
          getBatch,
          getBatchHistory,
          cancelBatch,
          getStatus,
          getData,
          getHistory,
          cancel,
          steer,
          deliverResult
        })
      })
    )
}
