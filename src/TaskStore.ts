/**
 * The task store: carries out the state machine's commands in Redis (one Lua script, one round trip,
 * per command) and reads tasks and their histories back.
 *
 * Invariant: every write goes through a script that appends the event(s) and updates the status hash,
 * indexes and queue in one atomic step, so the hash always equals the fold of the task's history.
 */
import { Context, Effect, Layer } from "effect"
import type { BatchCommand, BatchState } from "../projections/BatchDecider.ts"
import type { PayloadChain, PayloadDelta } from "../projections/PayloadDelta.ts"
import { type Checkpoint, checkpointed, type NoCheckpoint, outstanding, type Rejection, type TaskCommand, type TaskState } from "../projections/TaskDecider.ts"
import { type BatchEnvelope, decodeBatchEnvelope } from "../streams/BatchEvent.ts"
import { batchKeys, type Keyspace, namespaceKeys, partitionKeys, partitionOf, partitionPrefix, taskKeys } from "../streams/Keys.ts"
import { RedisClient, type RedisConnection } from "../streams/RedisClient.ts"
import {
  COMMITS_NEXT,
  type FusedCommit,
  fusedCommits,
  installScripts,
  parseReply,
  type ScriptName,
  type Scripts,
  TASK_SCRIPT_KEYS
} from "../streams/Scripts.ts"
import { type CorruptEntry, type RedisError, toRedisError } from "../streams/StreamError.ts"
import {
  decodeEnvelope,
  decodeHistory,
  type Envelope,
  type HistoryOwner,
  type TaskError,
  type TaskStatus,
  type WaitItem,
  type WaitResult
} from "../streams/TaskEvent.ts"
import {
  BatchAlreadyExists,
  BatchAlreadyFinished,
  BatchNotFound,
  type BatchRejected,
  rejectionError,
  TaskNotCounted,
  type TaskRejected
} from "./Errors.ts"

/** What a queue entry says about the delivery a worker command belongs to. */
export interface Delivery {
  readonly entryId: string
  readonly agent: string
}

/** A task as returned to users (`getTaskData`). */
export interface TaskData {
  readonly id: string
  readonly agent: string
  readonly ownerId: string
  readonly status: TaskStatus
  readonly payload: unknown
  readonly output?: unknown
  readonly error?: TaskError
  /** Claims so far (each claim is one attempt at a turn). */
  readonly attempts: number
  readonly retries: number
  readonly maxRetries: number
  readonly turns: number
  readonly cancelRequested: boolean
  readonly pendingSteering: number
  readonly worker?: string
  readonly retryAt?: number
  readonly lastHeartbeatAt?: number
  readonly createdAt: number
  readonly updatedAt: number
  /** The task that spawned this one. */
  readonly parentId?: string
  readonly batchId?: string
  /** While waiting: the items still outstanding (with the tokens a delivery over HTTP must present). */
  readonly waitingFor?: ReadonlyArray<WaitItem>
  /** While waiting: the earliest timeout among them (ms). */
  readonly deadline?: number
  /** The child tasks it spawned; `end` once each reported (or timed out). */
  readonly children?: ReadonlyArray<{ readonly id: string; readonly agent: string; readonly end?: string }>
}

/**
 * What a task keeps beside its status hash: steering, its wait, its results and its children (raw, as stored),
 * and the history entries the hash points at: the hash keeps `payloadAt` / `outputAt` (indexes into the
 * history) rather than copies of the payload and output (see lib.lua's `append`).
 */
export interface TaskSideData {
  readonly steering: ReadonlyArray<string>
  readonly wait: ReadonlyArray<string>
  readonly results: Record<string, string>
  readonly children: Record<string, string>
  /**
   * The history entry at `payloadAt`, or the entries of its chain (the whole payload, then what each later
   * checkpoint changed, ADR 0018) as a list; null: none.
   */
  readonly payloadEntry?: string | ReadonlyArray<string> | null | undefined
  /** The history entry at `outputAt` (null: none). */
  readonly outputEntry?: string | null | undefined
}

const noSideData: TaskSideData = { steering: [], wait: [], results: {}, children: {} }

const parseValues = <A>(record: Record<string, string>): Record<string, A> =>
  Object.fromEntries(Object.entries(record).map(([k, v]) => [k, JSON.parse(v) as A]))

/** What `claimNext` reads: whose queue in which partition, for which consumer, how many entries at most. */
export interface ClaimRequest {
  readonly agent: string
  readonly partition: number
  readonly worker: string
  readonly count: number
  readonly now: number
}

/** One queue entry `claimNext` read, and the outcome of its claim (as `Claim` would have had it). */
export interface ClaimedEntry {
  readonly entryId: string
  readonly taskId: string
  /** The lease the entry named. */
  readonly lease: number
  readonly outcome: Accepted | TaskRejected
}

/** The outcome of an accepted command: script-specific values (e.g. the claimed task). */
export interface Accepted {
  readonly values: ReadonlyArray<unknown>
}

/** What `claimNext` answers. */
export interface ClaimNextResult {
  /** The commit's outcome (a RedisError if it could not be sent or answered: it may have been applied). */
  readonly outcome: Accepted | TaskRejected | RedisError | undefined
  readonly claims: ReadonlyArray<ClaimedEntry>
  /** Why the claim failed (then `claims` is empty). */
  readonly claimError?: RedisError
}

/** A fused commit waiting to be sent with the others of its partition, agent and worker (`claimNext`). */
interface FusedCall {
  readonly request: ClaimRequest
  readonly after: { readonly command: TaskCommand; readonly delivery?: Delivery }
  readonly commit: readonly [FusedCommit, ReadonlyArray<string | number>]
  readonly resolve: (result: ClaimNextResult) => void
}

/**
 * Commits in one `commits_next` call at most; as many waiting go at once, however many calls are in flight.
 * Bigger calls would cost Redis less per commit, but the pool would move in convoys: with 100 slots and calls
 * of up to 50, Redis and the client each sat idle about a fifth of the time, waiting for the other (ADR 0013).
 */
export const MAX_COMMITS_PER_CALL = 10
/**
 * Fused calls of one partition, agent and worker that go at once, by default: a commit made while this many
 * are waiting for Redis waits, and goes with the others made meanwhile when one returns or when
 * MAX_COMMITS_PER_CALL of them wait (ADR 0013).
 */
export const FUSED_CALLS_IN_FLIGHT = 4

/**
 * Commands per pipeline of `executeMany`, each pipeline written as soon as it is full, so that Redis runs the
 * first ones while the client still prepares and encodes the rest. Ten: bulk enqueues of 50 took 0.88–0.97 ms
 * a call instead of 1.04–1.13, of 10,000 tasks 151–223 ms instead of 224–329 (docs/performance.md, fifteenth
 * round); 5, 25 and 50 did no better for large calls.
 */
export const PIPELINE_CHUNK = 10

/** Commands of one partition that go to Redis in one pipeline (`executeMany`), with their input positions. */
interface PipelineChunk {
  readonly indexes: Array<number>
  readonly calls: Array<[ScriptName, ReadonlyArray<string | number>]>
  readonly commands: Array<TaskCommand>
}

const json = (value: unknown): string => JSON.stringify(value ?? null)

/** A field of the event in a history entry (raw envelope JSON); null when there is no entry. */
const eventField = (entry: string | null | undefined, field: "payload" | "output"): unknown =>
  entry === null || entry === undefined ? null : (JSON.parse(entry) as { event: Record<string, unknown> }).event[field] ?? null

/**
 * The task's payload from the history entry holding it, or from its chain (lib.lua's payload_entries): the
 * whole payload, with each later checkpoint's delta applied in order. Entries of the range that checkpoint
 * nothing (claims, steering, results) are passed over.
 */
export const payloadOf = (entries: string | ReadonlyArray<string> | null | undefined): unknown => {
  if (entries === null || entries === undefined || typeof entries === "string") return eventField(entries, "payload")
  let payload: unknown = null
  for (const entry of entries) {
    payload = checkpointed(payload, (JSON.parse(entry) as { event: { payload?: unknown; payloadDelta?: PayloadDelta } }).event)
  }
  return payload
}

/** What reading the payload from `entries` (as `payloadOf` takes them) cost: the next checkpoint's choice rests on it. */
const chainOf = (entries: string | ReadonlyArray<string> | null | undefined): PayloadChain =>
  entries === null || entries === undefined
    ? { entries: 0, length: 0 }
    : typeof entries === "string"
    ? { entries: 1, length: entries.length }
    : { entries: entries.length, length: entries.reduce((n, e) => n + e.length, 0) }

/** A checkpoint's script arguments: the payload's JSON (`none` without one) or its delta's, and "1" for a delta. */
const checkpointArgs = (c: Checkpoint | NoCheckpoint, none: string): [string, string] =>
  c.payloadDelta !== undefined ? [JSON.stringify(c.payloadDelta), "1"] : [c.payload === undefined ? none : json(c.payload), ""]

/** Reads task `taskId`'s status hash and side data into the decider's state (the hash's key names the task). */
export const stateFromHash = (taskId: string, h: Record<string, string>, side: Partial<TaskSideData> = {}): TaskState => ({
  taskId,
  agent: h.agent!,
  ownerId: h.ownerId!,
  status: h.status as TaskStatus,
  payload: payloadOf(side.payloadEntry),
  ...(h.outputAt !== undefined ? { output: eventField(side.outputEntry, "output") } : {}),
  ...(h.error !== undefined ? { error: JSON.parse(h.error) as TaskError } : {}),
  lease: Number(h.lease),
  ...(h.worker !== undefined ? { worker: h.worker } : {}),
  retries: Number(h.retries),
  maxRetries: Number(h.maxRetries),
  turns: Number(h.turns),
  cancelRequested: h.cancel === "1",
  steering: (side.steering ?? []).map((m) => JSON.parse(m)),
  ...(h.retryAt !== undefined ? { retryAt: Number(h.retryAt) } : {}),
  createdAt: Number(h.createdAt),
  updatedAt: Number(h.updatedAt),
  version: Number(h.version),
  ...(h.parent !== undefined ? { parentId: h.parent } : {}),
  ...(h.batch !== undefined ? { batchId: h.batch } : {}),
  children: parseValues<TaskState["children"][string]>(side.children ?? {}),
  wait: (side.wait ?? []).map((item) => JSON.parse(item) as WaitItem),
  results: parseValues<WaitResult>(side.results ?? {}),
  ...(h.deadline !== undefined ? { deadline: Number(h.deadline) } : {})
})

/** A `read` reply's values (read.lua): the hash (one JSON object), then the side data. */
const viewOf = (values: ReadonlyArray<unknown>) => ({
  h: JSON.parse(String(values[0])) as Record<string, string>,
  side: {
    ...sideLists(values, 3),
    payloadEntry: (values[1] as string | ReadonlyArray<string> | null) || null,
    outputEntry: (values[2] as string | null) || null
  }
})

/** A task's side data in a reply from `at` on (lib.lua's side_view): steering, wait, results and children as flat lists. */
const sideLists = (values: ReadonlyArray<unknown>, at: number) => ({
  steering: (values[at] ?? []) as ReadonlyArray<string>,
  wait: (values[at + 1] ?? []) as ReadonlyArray<string>,
  results: flatToRecord((values[at + 2] ?? []) as ReadonlyArray<unknown>),
  children: flatToRecord((values[at + 3] ?? []) as ReadonlyArray<unknown>)
})

/**
 * What a worker runs a claimed task's turn from: the claimed task's state as the claim leaves it, in part, and
 * what reading its payload cost (`payloadChain`, for the choice of the next checkpoint's form).
 */
export type ClaimedTask =
  & Pick<TaskState, "ownerId" | "lease" | "turns" | "retries" | "payload" | "steering" | "wait" | "results" | "children">
  & { readonly payloadChain: PayloadChain }

/**
 * A claim's reply values (lib.lua's claim_view): owner, lease, turns, retries, the history entry holding the
 * payload, then the side data.
 */
export const claimedTask = (values: ReadonlyArray<unknown>): ClaimedTask => {
  const side = sideLists(values, 5)
  return {
    ownerId: String(values[0]),
    lease: Number(values[1]),
    turns: Number(values[2]),
    retries: Number(values[3]),
    payload: payloadOf(values[4] as string | ReadonlyArray<string> | null),
    payloadChain: chainOf(values[4] as string | ReadonlyArray<string> | null),
    steering: side.steering.map((m) => JSON.parse(m)),
    wait: side.wait.map((item) => JSON.parse(item) as WaitItem),
    results: parseValues<WaitResult>(side.results),
    children: parseValues<TaskState["children"][string]>(side.children)
  }
}

/**
 * Whether a commit's reply says the task ended and went to the outbox (lib.lua's follow_up_due): its parent or
 * batch must hear of its end, or its children follow it, so the worker runs the follow-up step at once.
 */
export const followUpDue = (values: ReadonlyArray<unknown>): boolean =>
  (values[0] === "TaskCompleted" || values[0] === "TaskCancelled" || values[0] === "failed") && Number(values[1]) === 1

export const flatToRecord = (flat: ReadonlyArray<unknown>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1])
  return out
}

export const taskDataFromHash = (
  taskId: string,
  h: Record<string, string>,
  pendingSteering: number,
  side: Omit<TaskSideData, "steering"> = noSideData
): TaskData => {
  const s = stateFromHash(taskId, h, side)
  const children = Object.entries(s.children)
  return {
    id: s.taskId,
    agent: s.agent,
    ownerId: s.ownerId,
    status: s.status,
    payload: s.payload,
    ...(s.output !== undefined ? { output: s.output } : {}),
    ...(s.error !== undefined ? { error: s.error } : {}),
    attempts: s.lease,
    retries: s.retries,
    maxRetries: s.maxRetries,
    turns: s.turns,
    cancelRequested: s.cancelRequested,
    pendingSteering,
    ...(s.worker !== undefined ? { worker: s.worker } : {}),
    ...(s.retryAt !== undefined ? { retryAt: s.retryAt } : {}),
    ...(h.hb !== undefined ? { lastHeartbeatAt: Number(h.hb) } : {}),
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    ...(s.parentId !== undefined ? { parentId: s.parentId } : {}),
    ...(s.batchId !== undefined ? { batchId: s.batchId } : {}),
    ...(s.status === "waiting" ? { waitingFor: outstanding(s.wait, s.results) } : {}),
    ...(s.deadline !== undefined ? { deadline: s.deadline } : {}),
    ...(children.length > 0 ? { children: children.map(([id, c]) => ({ id, ...c })) } : {})
  }
}

const toRejection = (reason: string, status: TaskStatus | "", lease: number, pending: number, detail: string): Rejection => {
  switch (reason) {
    case "ResultNotPending":
      return { _tag: reason, id: detail, status: status as TaskStatus }
    case "ResultAlreadyReceived":
    case "InvalidResultToken":
      return { _tag: reason, id: detail }
    case "InvalidWait": {
      const at = detail.indexOf(":")
      return { _tag: reason, reason: detail.slice(0, at) as "empty", id: detail.slice(at + 1) }
    }
    case "TaskNotFound":
    case "TaskAlreadyExists":
      return { _tag: reason }
    case "TaskAlreadyFinished":
      return { _tag: reason, status: status as TaskStatus }
    case "StaleLease":
      return { _tag: reason, status: status as TaskStatus, currentLease: lease }
    case "NotDue":
      return { _tag: reason, status: status as TaskStatus }
    default:
      return { _tag: "InvalidSteeringCount", pending }
  }
}

/** The script, and its arguments after the three task keys and (prefix, id, now), for a command. */
const scriptCall = (
  command: TaskCommand,
  delivery: Delivery | undefined,
  control: string,
  historyTtlSeconds: number
): [ScriptName, ReadonlyArray<string | number>] => {
  const entry = delivery?.entryId ?? ""
  const agent = delivery?.agent ?? ""
  switch (command._tag) {
    case "Enqueue":
      return [
        "enqueue",
        [command.agent, command.ownerId, json(command.payload), command.maxRetries, command.parentId ?? "", command.batchId ?? ""]
      ]
    case "Claim":
      return ["claim", [command.lease, command.worker, entry, agent]]
    case "Heartbeat":
      return ["heartbeat", [command.lease, command.worker, entry, agent]]
    case "CompleteTurn": {
      const [payload, delta] = checkpointArgs(command, "null")
      return ["checkpoint", [command.lease, entry, payload, command.steeringApplied, delta]]
    }
    case "Complete":
      return ["complete", [command.lease, entry, json(command.output), command.steeringApplied, ...checkpointArgs(command, "")]]
    case "Fail":
      return ["fail", [command.lease, entry, json(command.error), command.retry, Math.round(command.retryAt)]]
    case "AcknowledgeCancel":
      return ["release", [command.lease, entry, "cancel"]]
    case "Release":
      return ["release", [command.lease, entry, "release"]]
    case "Cancel":
      return ["cancel", [control]]
    case "Steer":
      return ["steer", [control, json(command.messages), ...command.messages.map(json)]]
    case "Recover":
      return ["recover", [command.lease, entry, agent]]
    case "WakeUp":
      return ["wake", []]
    case "Expire":
      return ["expire", [historyTtlSeconds]]
    case "Wait": {
      const [payload, delta] = checkpointArgs(command, "null")
      return [
        "wait",
        [
          command.lease,
          entry,
          payload,
          command.steeringApplied,
          delta,
          JSON.stringify(command.pending),
          ...command.pending.map((i) => JSON.stringify(i))
        ]
      ]
    }
    case "SpawnChildren":
      return ["spawn", [command.lease, ...command.children.flatMap((c) => [c.id, c.agent])]]
    case "DeliverResult":
      return ["deliver", [command.id, json(command.result), command.token ?? ""]]
    case "ChildFinished":
      return [
        "child_finished",
        [
          command.childId,
          command.status,
          command.output === undefined ? "" : json(command.output),
          command.error === undefined ? "" : JSON.stringify(command.error)
        ]
      ]
    case "TimeoutWait":
      return ["timeout", []]
  }
}

const commandLease = (command: TaskCommand): number => "lease" in command ? command.lease : 0

export class TaskStore extends Context.Service<TaskStore, {
  readonly keyspace: Keyspace
  /** Carries out one command atomically. */
  readonly execute: (
    command: TaskCommand,
    delivery?: Delivery,
    options?: { readonly historyTtlSeconds?: number }
  ) => Effect.Effect<Accepted, TaskRejected | RedisError>
  /**
   * `execute` as a Promise, which rejects with the same typed TaskRejected or RedisError: for the Promise facade's
   * single enqueue, where a fiber per call was a tenth of the client's CPU (docs/performance.md, fourteenth round).
   */
  readonly executePromise: (command: TaskCommand, delivery?: Delivery) => Promise<Accepted>
  /**
   * Carries out many commands, pipelined, each with its own outcome, in the input order. `commands` is read
   * lazily: pipelines of PIPELINE_CHUNK go to Redis while the rest are still read. Not atomic as a whole.
   */
  readonly executeMany: (
    commands: Iterable<{ readonly command: TaskCommand; readonly delivery?: Delivery }>,
    options?: { readonly historyTtlSeconds?: number }
  ) => Effect.Effect<ReadonlyArray<Accepted | TaskRejected>, RedisError>
  /**
   * Reads up to `count` new entries of the agent's queue in one partition and claims each (TaskClaimed), in
   * one script. With `after` (a command of a task in that partition), that command runs first, in the same
   * round trip — fused with the claim in one script call for the usual commits (Scripts.ts `fusedCommits`):
   * a worker commits its turn and takes its next task at once. While Redis is behind (FUSED_CALLS_IN_FLIGHT of
   * a partition, agent and worker's fused calls await replies), the commits made meanwhile wait and then go
   * in one call (`commits_next`), each with its own outcome (ADR 0013).
   */
  readonly claimNext: (
    request: ClaimRequest,
    after?: { readonly command: TaskCommand; readonly delivery?: Delivery }
  ) => Effect.Effect<ClaimNextResult>
  readonly getTask: (taskId: string) => Effect.Effect<TaskData | undefined, RedisError>
  /** The status hash and steering list as the decider's state (for verification). */
  readonly getState: (taskId: string) => Effect.Effect<TaskState | undefined, RedisError>
  readonly getStatus: (taskId: string) => Effect.Effect<TaskStatus | undefined, RedisError>
  /**
   * The task's history, oldest first; `start`/`count` page through long histories. A page past the first entry
   * is named by that entry (ADR 0026): `owner`, when the caller has it (an earlier page's), spares reading it again.
   */
  readonly getHistory: (
    taskId: string,
    page?: { readonly start?: number; readonly count?: number },
    owner?: HistoryOwner
  ) => Effect.Effect<ReadonlyArray<Envelope>, RedisError | CorruptEntry>
  /** Carries out one batch command atomically (`retentionSeconds`: how long a batch is kept once all its tasks ended). */
  readonly executeBatch: (
    command: BatchCommand,
    options?: { readonly retentionSeconds?: number }
  ) => Effect.Effect<Accepted, BatchRejected | RedisError>
  readonly getBatchState: (batchId: string) => Effect.Effect<BatchState | undefined, RedisError>
  readonly getBatchHistory: (batchId: string) => Effect.Effect<ReadonlyArray<BatchEnvelope>, RedisError | CorruptEntry>
  /**
   * The follow-up step is done for the task as of `version` (undefined: it had no hot data): it leaves the
   * outbox, unless it changed since. True when removed.
   */
  readonly settled: (taskId: string, version: number | undefined) => Effect.Effect<boolean, RedisError>
  readonly conn: RedisConnection
  readonly scripts: Scripts
}>()("factorial/TaskStore") {
  /**
   * `fusedCallsInFlight`, `maxCommitsPerCall`: see FUSED_CALLS_IN_FLIGHT and MAX_COMMITS_PER_CALL (the model test
   * sets 1 and 3, so that gathered calls form at once and full ones go while others are in flight).
   */
  static readonly layer = (
    keyspace: Keyspace,
    options: { readonly fusedCallsInFlight?: number; readonly maxCommitsPerCall?: number } = {}
  ) =>
    Layer.effect(
      TaskStore,
      Effect.gen(function*() {
        const redis = yield* RedisClient
        const conn = redis.conn
        const scripts = yield* redis.use("function load", installScripts)
        const control = namespaceKeys(keyspace).control

        const argsOf = (
          command: TaskCommand,
          delivery: Delivery | undefined,
          historyTtlSeconds: number
        ): [ScriptName, ReadonlyArray<string | number>] => {
          const k = taskKeys(keyspace, command.taskId)
          const [name, rest] = scriptCall(command, delivery, control, historyTtlSeconds)
          return [name, [k.task, k.log, k.events, k.prefix, command.taskId, Math.round(command.now), ...rest]]
        }

        const outcome = (command: TaskCommand, raw: unknown): Accepted | TaskRejected => {
          const reply = parseReply(raw)
          return reply._tag === "ok"
            ? { values: reply.values }
            : rejectionError(
              command.taskId,
              commandLease(command),
              toRejection(reply.reason, reply.status, reply.lease, reply.pending, reply.detail)
            )
        }

        /** The command's script reply; rejects with a RedisError only. */
        const callScript = async (command: TaskCommand, delivery: Delivery | undefined, historyTtlSeconds: number) => {
          try {
            const [name, args] = argsOf(command, delivery, historyTtlSeconds)
            return await scripts.call(name, args)
          } catch (cause) {
            throw toRedisError(command._tag, cause)
          }
        }

        const executePromise = async (command: TaskCommand, delivery?: Delivery): Promise<Accepted> => {
          const result = outcome(command, await callScript(command, delivery, 0))
          if ("values" in result) return result
          throw result
        }

        // The reply is read inside the Effect, so a reply it cannot read is a defect, not a typed failure.
        const execute = (
          command: TaskCommand,
          delivery?: Delivery,
          options?: { readonly historyTtlSeconds?: number }
        ): Effect.Effect<Accepted, TaskRejected | RedisError> =>
          Effect.flatMap(
            Effect.tryPromise({
              try: () => callScript(command, delivery, options?.historyTtlSeconds ?? 0),
              catch: (e) => e as RedisError
            }),
            (raw) => {
              const result = outcome(command, raw)
              return "values" in result ? Effect.succeed(result) : Effect.fail(result)
            }
          )

        /**
         * Pipelines of at most PIPELINE_CHUNK commands, each of one partition (a Cluster pipeline must stay in one
         * slot), each written as soon as it is full: Redis runs the first while the rest are still being prepared
         * (`commands` is read lazily) and encoded. Results keep the input order.
         */
        const executeMany = (
          commands: Iterable<{ readonly command: TaskCommand; readonly delivery?: Delivery }>,
          options?: { readonly historyTtlSeconds?: number }
        ) =>
          Effect.tryPromise({
            try: async () => {
              const ttl = options?.historyTtlSeconds ?? 0
              const results: Array<Accepted | TaskRejected> = []
              const sent: Array<Promise<void>> = []
              const pending = new Map<number, PipelineChunk>()
              const send = (chunk: PipelineChunk) =>
                sent.push(scripts.callMany(chunk.calls).then((replies) =>
                  replies.forEach(({ error, reply }, j) => {
                    if (error) throw error
                    results[chunk.indexes[j]!] = outcome(chunk.commands[j]!, reply)
                  })
                ))
              let i = 0
              try {
                for (const { command, delivery } of commands) {
                  const p = partitionOf(keyspace, command.taskId)
                  let chunk = pending.get(p)
                  if (chunk === undefined) pending.set(p, chunk = { indexes: [], calls: [], commands: [] })
                  chunk.indexes.push(i++)
                  chunk.calls.push(argsOf(command, delivery, ttl))
                  chunk.commands.push(command)
                  if (chunk.calls.length === PIPELINE_CHUNK) {
                    send(chunk)
                    pending.delete(p)
                  }
                }
              } catch (e) {
                await Promise.allSettled(sent) // no rejection of a pipeline already sent goes unhandled
                throw e
              }
              for (const chunk of pending.values()) send(chunk)
              await Promise.all(sent)
              return results
            },
            catch: (cause) => toRedisError("pipeline", cause)
          })

        /**
         * The claims of a `claimnext` reply (from `start`): entry id, task id, entry lease, then the length and
         * the elements of the claim's reply, per entry read.
         */
        const claimsOf = (request: ClaimRequest, raw: ReadonlyArray<unknown>, start = 1): Array<ClaimedEntry> => {
          const claims: Array<ClaimedEntry> = []
          for (let i = start; i + 3 < raw.length;) {
            const taskId = String(raw[i + 1])
            const lease = Number(raw[i + 2])
            const n = Number(raw[i + 3])
            claims.push({
              entryId: String(raw[i]),
              taskId,
              lease,
              outcome: outcome({ _tag: "Claim", taskId, lease, worker: request.worker, now: request.now }, raw.slice(i + 4, i + 4 + n))
            })
            i += 4 + n
          }
          return claims
        }

        /**
         * Fused commits (a commit and the claim of the slot's next task), by partition, agent and worker: each
         * goes to Redis at once while fewer than `callsInFlight` calls of its group are waiting for their
         * replies; otherwise it waits, and the commits that waited go together, as one `commits_next` call
         * (Scripts.ts), when a call returns or MAX_COMMITS_PER_CALL of them wait. So commits are gathered only
         * when Redis is behind, where one call for many saves it most, and Redis always has the next call
         * queued; a lone commit goes as `<commit>_next`, as before (ADR 0013).
         */
        const callsInFlight = options.fusedCallsInFlight ?? FUSED_CALLS_IN_FLIGHT
        const maxCommits = options.maxCommitsPerCall ?? MAX_COMMITS_PER_CALL
        const gathering = new Map<string, { readonly waiting: Array<FusedCall>; inFlight: number }>()
        const sendFused = async (calls: ReadonlyArray<FusedCall>): Promise<void> => {
          const first = calls[0]!
          const { request } = first
          const claimArgs = [request.worker, request.agent, calls.reduce((n, c) => n + c.request.count, 0)] as const
          try {
            // Either way the reply is flat: per commit `n, <its reply: n elements>`, then claimnext's (Scripts.ts).
            let raw: ReadonlyArray<unknown>
            if (calls.length === 1) {
              raw = (await scripts.call(`${first.commit[0]}_next`, [...first.commit[1], ...claimArgs])) as ReadonlyArray<unknown>
            } else {
              const keys = calls.flatMap((c) => c.commit[1].slice(0, TASK_SCRIPT_KEYS))
              const args = calls.flatMap((c) => [c.commit[0], c.commit[1].length - TASK_SCRIPT_KEYS, ...c.commit[1].slice(TASK_SCRIPT_KEYS)])
              const prefix = partitionPrefix(keyspace, request.partition)
              raw = (await scripts.call(COMMITS_NEXT, [...keys, calls.length, ...args, prefix, "", Math.round(request.now), ...claimArgs], keys.length)) as ReadonlyArray<unknown>
            }
            // The claims go to the callers in order, as many as each asked for.
            let at = 0
            const outcomes = calls.map((c) => {
              const n = Number(raw[at])
              const part = raw.slice(at + 1, at + 1 + n)
              at += 1 + n
              // A commit of a gathered call that raised an error (Scripts.ts `commits_next`): failed alone.
              return part[0] === "error"
                ? toRedisError(c.after.command._tag, new Error(String(part[1])))
                : outcome(c.after.command, part)
            })
            const claims = claimsOf(request, raw, at + 1)
            let next = 0
            calls.forEach((c, i) => {
              c.resolve({ outcome: outcomes[i]!, claims: claims.slice(next, next + c.request.count) })
              next += c.request.count
            })
          } catch (cause) {
            // Not known whether it ran: each commit is reported failed (the caller sends it again, rejected if it
            // was applied) and entries it may have claimed are recovered by maintenance.
            for (const c of calls) {
              const error = toRedisError(c.after.command._tag, cause)
              c.resolve({ outcome: error, claims: [], claimError: error })
            }
          }
        }
        /**
         * Sends what waits in the group, one call per `maxCommits` commits: while fewer than `callsInFlight` calls
         * are in flight, and full calls at once.
         */
        const sendWaiting = (key: string, group: { readonly waiting: Array<FusedCall>; inFlight: number }) => {
          while (
            group.waiting.length > 0 && (group.inFlight < callsInFlight || group.waiting.length >= maxCommits)
          ) {
            group.inFlight++
            void sendFused(group.waiting.splice(0, maxCommits)).finally(() => {
              group.inFlight--
              if (group.waiting.length > 0) sendWaiting(key, group)
              else if (group.inFlight === 0) gathering.delete(key)
            })
          }
        }

        const claimNext = (request: ClaimRequest, after?: { readonly command: TaskCommand; readonly delivery?: Delivery }) =>
          Effect.promise(async () => {
            const commit = after === undefined ? undefined : argsOf(after.command, after.delivery, 0)
            // The usual case: the commit and the claim fused in one script call (see Scripts.ts), with the other
            // commits of its group that waited, if Redis is behind.
            if (
              commit !== undefined && (fusedCommits as ReadonlyArray<string>).includes(commit[0]) &&
              partitionOf(keyspace, after!.command.taskId) === request.partition
            ) {
              const key = `${request.partition}\u0000${request.agent}\u0000${request.worker}`
              let group = gathering.get(key)
              if (group === undefined) gathering.set(key, group = { waiting: [], inFlight: 0 })
              const gathered = group
              const result = new Promise<ClaimNextResult>((resolve) =>
                gathered.waiting.push({ request, after: after!, commit: commit as [FusedCommit, ReadonlyArray<string | number>], resolve })
              )
              sendWaiting(key, group)
              return result
            }
            // Otherwise the two calls are written back to back on the shared connection and Redis runs them
            // in that order: still one round trip.
            const p = partitionKeys(keyspace, request.partition)
            const sent = commit === undefined ? undefined : scripts.call(...commit)
            const claim = scripts.call("claimnext", [
              p.queue(request.agent), p.queue(request.agent), p.events, partitionPrefix(keyspace, request.partition), "",
              Math.round(request.now), request.worker, request.agent, request.count
            ]) as Promise<ReadonlyArray<unknown>>
            const [committed, claimed] = await Promise.allSettled([sent, claim])
            // A failed claim only means no next task this time (entries it may have read are recovered by
            // maintenance, like those of a claim whose reply was lost).
            return {
              outcome: after === undefined
                ? undefined
                : committed.status === "fulfilled"
                ? outcome(after.command, committed.value)
                : toRedisError(after.command._tag, committed.reason),
              claims: claimed.status === "fulfilled" ? claimsOf(request, claimed.value) : [],
              ...(claimed.status === "rejected" ? { claimError: toRedisError("claimnext", claimed.reason) } : {})
            }
          })

        /** The status hash, the side data and the history entries the hash points at, in one call (`read.lua`). */
        const readTask = async (taskId: string) => {
          const k = taskKeys(keyspace, taskId)
          const values = parseReply(await scripts.call("read", [k.task, k.log, k.events, k.prefix, taskId, 0]))
          return values._tag === "ok" && values.values.length > 0 ? viewOf(values.values) : undefined
        }

        const getState = (taskId: string) =>
          redis.use("getState", async () => {
            const read = await readTask(taskId)
            return read === undefined ? undefined : stateFromHash(taskId, read.h, read.side)
          })

        const getTask = (taskId: string) =>
          redis.use("getTask", async () => {
            const read = await readTask(taskId)
            return read === undefined ? undefined : taskDataFromHash(taskId, read.h, read.side.steering.length, read.side)
          })

        const settled = (taskId: string, version: number | undefined) =>
          Effect.tryPromise({
            try: () => {
              const k = taskKeys(keyspace, taskId)
              return scripts.call("settled", [k.task, k.log, k.events, k.prefix, taskId, 0, version === undefined ? "" : String(version)])
            },
            catch: (cause) => toRedisError("settled", cause)
          }).pipe(Effect.map((raw) => parseReply(raw)._tag === "ok" && Number((raw as Array<unknown>)[1]) === 1))

        // A page past the start, unless its owner is given, reads the history's first entry with it, in one
        // transaction: that entry names the task, agent and owner the later ones leave out (ADR 0026).
        const getHistory = (
          taskId: string,
          page?: { readonly start?: number; readonly count?: number },
          owner?: HistoryOwner
        ) =>
          Effect.flatMap(
            redis.use("getHistory", async (c) => {
              const log = taskKeys(keyspace, taskId).log
              const start = page?.start ?? 0
              const stop = page?.count === undefined ? -1 : start + page.count - 1
              if (start === 0 || owner !== undefined) return { first: undefined, entries: await c.lrange(log, start, stop) }
              const replies = (await c.multi().lindex(log, 0).lrange(log, start, stop).exec()) ?? []
              for (const [err] of replies) if (err) throw err
              return { first: (replies[0]?.[1] ?? null) as string | null, entries: (replies[1]?.[1] ?? []) as Array<string> }
            }),
            ({ entries, first }) =>
              first === undefined
                ? decodeHistory(entries, owner)
                : first === null || entries.length === 0
                ? Effect.succeed([])
                : Effect.flatMap(decodeEnvelope(first), (owner) => decodeHistory(entries, owner))
          )

        const getStatus = (taskId: string) =>
          redis.use("getStatus", async (c): Promise<TaskStatus | undefined> => {
            const k = taskKeys(keyspace, taskId)
            const status = await c.hget(k.task, "status")
            if (status !== null) return status as TaskStatus
            // Hot data gone: the history says whether the task expired.
            const last = await c.lindex(k.log, -1)
            return last !== null && JSON.parse(last)?.event?._tag === "TaskExpired" ? "expired" : undefined
          })

        const executeBatch = (command: BatchCommand, options?: { readonly retentionSeconds?: number }) =>
          Effect.tryPromise({
            try: () => {
              const k = batchKeys(keyspace, command.batchId)
              const keys = [k.batch, k.log, k.tasks, k.ended, command.batchId, Math.round(command.now)]
              switch (command._tag) {
                case "CreateBatch":
                  // Each id with its position, as strings (batch_create.lua).
                  return scripts.call("batch_create", [
                    ...keys,
                    command.agent,
                    command.ownerId,
                    JSON.stringify(command.taskIds),
                    ...command.taskIds.flatMap((id, i) => [id, String(i)])
                  ])
                case "BatchTaskFinished":
                  return scripts.call("batch_task_finished", [...keys, command.taskId, command.status, options?.retentionSeconds ?? 0])
                case "CancelBatch":
                  return scripts.call("batch_cancel", keys)
              }
            },
            catch: (cause) => toRedisError(command._tag, cause)
          }).pipe(Effect.flatMap((raw): Effect.Effect<Accepted, BatchRejected> => {
            const reply = raw as ReadonlyArray<unknown>
            if (reply[0] === "ok") return Effect.succeed({ values: reply.slice(1) })
            const batchId = command.batchId
            switch (reply[1]) {
              case "BatchNotFound":
                return Effect.fail(new BatchNotFound({ batchId }))
              case "BatchAlreadyExists":
                return Effect.fail(new BatchAlreadyExists({ batchId }))
              case "BatchAlreadyFinished":
                return Effect.fail(new BatchAlreadyFinished({ batchId }))
              default:
                return Effect.fail(
                  new TaskNotCounted({
                    batchId,
                    taskId: command._tag === "BatchTaskFinished" ? command.taskId : "",
                    reason: reply[2] === "notInBatch" ? "notInBatch" : "alreadyCounted"
                  })
                )
            }
          }))

        const getBatchState = (batchId: string) =>
          redis.use("getBatch", async (c): Promise<BatchState | undefined> => {
            const k = batchKeys(keyspace, batchId)
            const [[, h], [, tasks], [, ended]] = (await c.pipeline().hgetall(k.batch).hgetall(k.tasks).hgetall(k.ended).exec()) as [
              [unknown, Record<string, string>],
              [unknown, Record<string, string>],
              [unknown, Record<string, string>]
            ]
            if (Object.keys(h).length === 0) return undefined
            return {
              batchId: h.id!,
              agent: h.agent!,
              ownerId: h.ownerId!,
              status: h.status as BatchState["status"],
              taskIds: Object.entries(tasks).sort(([, a], [, b]) => Number(a) - Number(b)).map(([id]) => id),
              ended: ended as BatchState["ended"],
              createdAt: Number(h.createdAt),
              updatedAt: Number(h.updatedAt),
              version: Number(h.version)
            }
          })

        const getBatchHistory = (batchId: string) =>
          Effect.flatMap(
            redis.use("getBatchHistory", (c) => c.lrange(batchKeys(keyspace, batchId).log, 0, -1)),
            (entries) => Effect.forEach(entries, (e) => decodeBatchEnvelope(e))
          )

        return TaskStore.of({
          keyspace,
          execute,
          executePromise,
          executeMany,
          claimNext,
          getTask,
          getState,
          getStatus,
          getHistory,
          settled,
          executeBatch,
          getBatchState,
          getBatchHistory,
          conn,
          scripts
        })
      })
    )
}
