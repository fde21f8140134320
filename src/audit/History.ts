/**
 * A task's history, read in pages, and its replay: the state after every event, folded with the
 * decider's `evolve` (see `Projection.ts`), with the agent conversation (`payload.messages`) when the
 * payload carries one.
 *
 * Invariant: memory is bounded by one page of history (`pageSize` entries) for the streamed forms;
 * `replayTask` collects its steps, so it holds the whole replay by design. A history is append-only, so
 * paging it by index while the task runs yields a consistent prefix, never a mix of two versions.
 */
import { Effect, Option, Stream } from "effect"
import type { State, TaskState } from "../../projections/TaskDecider.ts"
import type { CorruptEntry, RedisError } from "../../streams/StreamError.ts"
import type { Envelope, HistoryOwner } from "../../streams/TaskEvent.ts"
import { InvalidInput, TaskNotFound } from "../Errors.ts"
import { validTaskId } from "../TaskClient.ts"
import { TaskStore } from "../TaskStore.ts"
import { emptyProjection, project, type Projection } from "./Projection.ts"

export const defaultPageSize = 200

export interface HistoryReadOptions {
  /** Entries per LRANGE round trip (default 200). */
  readonly pageSize?: number
  /** First entry to read, from 0 (default 0). */
  readonly from?: number
  /** Read no further than this entry index (exclusive); default: to the end. */
  readonly to?: number
}

const checkPageSize = (n: number | undefined): Effect.Effect<number, InvalidInput> =>
  n === undefined
    ? Effect.succeed(defaultPageSize)
    : Number.isInteger(n) && n > 0 && n <= 100_000
    ? Effect.succeed(n)
    : Effect.fail(new InvalidInput({ message: `pageSize must be an integer from 1 to 100000, got ${n}` }))

/** The history in pages of decoded envelopes, oldest first. An unknown task gives no pages. */
export const historyPages = (
  taskId: string,
  options: HistoryReadOptions = {}
): Stream.Stream<ReadonlyArray<Envelope>, RedisError | CorruptEntry | InvalidInput, TaskStore> =>
  Stream.unwrap(Effect.gen(function*() {
    const store = yield* TaskStore
    const id = yield* validTaskId(taskId)
    const pageSize = yield* checkPageSize(options.pageSize)
    const to = options.to ?? Infinity
    // Whose the history is, from the first page read: later pages need not read its first entry again (ADR 0026).
    let owner: HistoryOwner | undefined
    return Stream.paginate(options.from ?? 0, (start: number) => {
      const count = Math.min(pageSize, to - start)
      if (count <= 0) return Effect.succeed([[], Option.none<number>()] as const)
      return Effect.map(store.getHistory(id, { start, count }, owner), (page) => {
        const e = page[0]
        if (owner === undefined && e !== undefined) owner = { taskId: e.taskId, agent: e.agent, ownerId: e.ownerId }
        return [
          page.length === 0 ? [] : [page],
          page.length === count && start + count < to ? Option.some(start + count) : Option.none<number>()
        ] as const
      })
    })
  }))

/** The history as a stream of envelopes, read page by page. */
export const historyStream = (
  taskId: string,
  options: HistoryReadOptions = {}
): Stream.Stream<Envelope, RedisError | CorruptEntry | InvalidInput, TaskStore> =>
  Stream.flattenIterable(historyPages(taskId, options))

/** The state after one event of a replay. */
export interface ReplayStep {
  readonly version: number
  /** The partition-log id of the event. */
  readonly id: string
  readonly at: number
  readonly event: Envelope["event"]
  /** The folded state after this event. */
  readonly state: TaskState
  /** The agent conversation after this event, when the payload carries `messages`. */
  readonly messages?: ReadonlyArray<unknown>
}

export interface Replay {
  readonly taskId: string
  /** The version the replay stopped at (`upTo`, or the last one). */
  readonly version: number
  /** The state at `version`. */
  readonly state: State
  readonly steps: ReadonlyArray<ReplayStep>
}

export interface ReplayOptions {
  /** Stop after this version (from 1). Default: the whole history. */
  readonly upTo?: number
  readonly pageSize?: number
}

/** `payload.messages`, when the payload is an object that carries an array of them. */
export const messagesOf = (payload: unknown): ReadonlyArray<unknown> | undefined => {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return undefined
  const messages = (payload as { readonly messages?: unknown }).messages
  return Array.isArray(messages) ? messages : undefined
}

const stepOf = (p: Projection, e: Envelope): ReplayStep | undefined => {
  if (p.state === undefined) return undefined
  const messages = messagesOf(p.state.payload)
  return {
    version: e.version,
    id: e.id,
    at: e.at,
    event: e.event,
    state: p.state,
    ...(messages !== undefined ? { messages } : {})
  }
}

const checkUpTo = (upTo: number | undefined): Effect.Effect<number | undefined, InvalidInput> =>
  upTo === undefined || (Number.isInteger(upTo) && upTo >= 1)
    ? Effect.succeed(upTo)
    : Effect.fail(new InvalidInput({ message: `upTo must be a version from 1, got ${upTo}` }))

/** The replay as a stream of steps (bounded memory: one page of history and the current state). */
export const replayStream = (
  taskId: string,
  options: ReplayOptions = {}
): Stream.Stream<ReplayStep, RedisError | CorruptEntry | InvalidInput, TaskStore> =>
  Stream.unwrap(Effect.map(checkUpTo(options.upTo), (upTo) =>
    historyStream(taskId, {
      ...(options.pageSize !== undefined ? { pageSize: options.pageSize } : {}),
      ...(upTo !== undefined ? { to: upTo } : {})
    }).pipe(
      Stream.mapAccum(() => emptyProjection, (p: Projection, e: Envelope) => {
        const next = project(p, e)
        const step = e.event._tag === "TaskHeartbeat" ? undefined : stepOf(next, e)
        return [next, step === undefined ? [] : [step]] as const
      })
    )))

/**
 * Replays a task: the state after every event, and the state at `upTo` (or the end). Fails with
 * `TaskNotFound` when the task has no history (never existed, or its history's retention ran out).
 */
export const replayTask = (
  taskId: string,
  options: ReplayOptions = {}
): Effect.Effect<Replay, RedisError | CorruptEntry | InvalidInput | TaskNotFound, TaskStore> =>
  Effect.gen(function*() {
    const steps = yield* Stream.runCollect(replayStream(taskId, options))
    const last = steps[steps.length - 1]
    if (last === undefined) return yield* new TaskNotFound({ taskId })
    return { taskId, version: last.version, state: last.state, steps }
  })
