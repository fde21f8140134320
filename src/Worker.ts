/**
 * The worker pool of one agent in this process: a consumer of the agent's queue consumer group in every
 * partition. Readers block on XREADGROUP (dedicated connections) only while a turn slot is free, claim
 * what they read in one pipelined round trip, and run each claimed task's turn in its own fiber with a
 * heartbeat beside it.
 *
 * A turn ends in exactly one command under its lease: CompleteTurn, Wait, Complete, Fail, AcknowledgeCancel
 * (cancelled) or Release (shutdown). A lost lease (heartbeat rejected) interrupts the turn and commits
 * nothing; a zombie's late commit is rejected by the scripts anyway. A turn may spawn child tasks before
 * it ends (SpawnChildren under its lease, then the children's enqueues). After the commit of a task that has
 * a parent or children, the worker runs the follow-up step (src/FollowUp.ts).
 */
import { hostname } from "node:os"
import { randomUUID } from "node:crypto"
import { Cause, Deferred, Effect, Exit, Fiber, FiberSet, Random, Result, Schedule, Semaphore, Schema } from "effect"
import type { TaskCommand, TaskState } from "../projections/TaskDecider.ts"
import { partitionKeys, allPartitions } from "../streams/Keys.ts"
import { RedisClient, type RedisConnection } from "../streams/RedisClient.ts"
import { toRedisError } from "../streams/StreamError.ts"
import { TaskId, type WaitItem } from "../streams/TaskEvent.ts"
import {
  type BaseAgent,
  type ChildSpec,
  childTaskId,
  type DeliveredResult,
  newResultToken,
  type TurnContext,
  type TurnOutcome,
  type WaitSpec
} from "./Agent.ts"
import { backoffDelayMs, classifyFailure, errorKind, errorMessage, FatalAgentError, type RetryDecision, TurnTimeout } from "./AgentErrors.ts"
import { AgentWorkerConfig } from "./Config.ts"
import { ControlChannel } from "./ControlChannel.ts"
import { InvalidInput } from "./Errors.ts"
import { settle } from "./FollowUp.ts"
import { flatToRecord, sideDataFromReply, stateFromHash, TaskStore, type Delivery } from "./TaskStore.ts"

export const makeWorkerId = (): string => `${hostname()}-${process.pid}-${randomUUID().slice(0, 6)}`

type StopReason = "cancel" | "lease" | "shutdown"

type Verdict =
  | { readonly _tag: "Outcome"; readonly outcome: TurnOutcome<unknown> }
  | { readonly _tag: "Failed"; readonly error: unknown; readonly retry: RetryDecision }
  | { readonly _tag: "Stopped"; readonly reason: StopReason }

interface Claimed {
  readonly taskId: string
  readonly ownerId: string
  readonly lease: number
  readonly payload: unknown
  readonly turns: number
  readonly retries: number
  readonly steering: ReadonlyArray<unknown>
  readonly delivery: Delivery
  readonly parentId: string | undefined
  readonly batchId: string | undefined
  /** The children the task had spawned when claimed, and those this turn spawns. */
  readonly children: Set<string>
  /** What arrived for the wait this turn resumes from (in the wait's order). */
  readonly results: ReadonlyArray<DeliveredResult>
}

/** The results of the wait a claimed task resumes from, in the wait's order. */
const resultsOf = (state: TaskState): ReadonlyArray<DeliveredResult> =>
  state.wait.flatMap((item) => {
    const result = state.results[item.id]
    return result === undefined ? [] : [{ id: item.id, ...result }]
  })

const isTaskId = Schema.is(TaskId)

/** The wait items a turn's `Wait` stands for: child ids are children of the task, anything else a deferred result. */
const waitItems = (c: Claimed, pending: ReadonlyArray<WaitSpec | string>, now: number): ReadonlyArray<WaitItem> | InvalidInput => {
  const items: Array<WaitItem> = []
  for (const p of pending) {
    const spec: WaitSpec = typeof p === "string" ? { id: p } : p
    if (!isTaskId(spec.id)) return new InvalidInput({ message: `a wait item id is 1-128 of [A-Za-z0-9_.:-], got ${JSON.stringify(spec.id)}` })
    const timeoutAt = spec.timeoutAt ?? (spec.timeout === undefined ? undefined : now + spec.timeout * 1000)
    if (timeoutAt !== undefined && !Number.isFinite(timeoutAt)) return new InvalidInput({ message: `timeout of ${spec.id} is not a number` })
    const child = c.children.has(spec.id)
    items.push({
      id: spec.id,
      kind: child ? "child" : "result",
      ...(child ? {} : { token: spec.token ?? newResultToken() }),
      ...(timeoutAt !== undefined ? { timeoutAt: Math.round(timeoutAt) } : {}),
      ...(spec.onTimeout !== undefined ? { onTimeout: spec.onTimeout } : {})
    })
  }
  return items
}

export interface WorkerPoolOptions {
  readonly agent: BaseAgent<any>
  readonly config: AgentWorkerConfig
  readonly workerId: string
  /** Told when a task goes into backoff or starts waiting with a deadline, so local maintenance acts on time. */
  readonly onBackoff?: (retryAt: number) => void
  /** Custom events from turns (`ctx.emit`). */
  readonly onEmit?: (taskId: string, type: string, data: unknown) => void
  /** Max retries of the child tasks a turn spawns, by agent (default: AgentWorkerConfig's). */
  readonly maxRetries?: (agent: string) => number
}

/** Creates the agent's consumer group in every partition (idempotent). */
export const ensureGroups = (conn: RedisConnection, partitions: ReadonlyArray<string>, agent: string) =>
  Promise.all(
    partitions.map((queue) =>
      conn.xgroup("CREATE", queue, agent, "0", "MKSTREAM").catch((e: unknown) => {
        if (!String(e).includes("BUSYGROUP")) throw e
      })
    )
  )

/** Runs the pool until the scope closes; closing it stops claiming, lets turns finish, then hands back the rest. */
export const runWorkerPool = (options: WorkerPoolOptions) =>
  Effect.gen(function*() {
    const { agent, config, workerId } = options
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const control = yield* ControlChannel
    const ks = store.keyspace
    const queues = allPartitions(ks).map((p) => partitionKeys(ks, p).queue(agent.name))
    yield* redis.use("xgroup create", (c) => ensureGroups(c, queues, agent.name))

    const slots = yield* Semaphore.make(config.workers)
    const turns = yield* FiberSet.make<void, never>()
    const running = new Map<string, Deferred.Deferred<StopReason>>()

    const now = Effect.clockWith((clock) => clock.currentTimeMillis)

    /** Sends a worker command; a connection problem is retried a few times. */
    const send = (command: TaskCommand, delivery?: Delivery) =>
      store.execute(command, delivery).pipe(
        Effect.retry({
          while: (e) => e._tag === "RedisError" && e.isRetryable,
          schedule: Schedule.exponential("100 millis").pipe(Schedule.upTo({ times: 8 }))
        })
      )

    /** Sends a worker command; a rejection is only logged. */
    const commit = (command: TaskCommand, delivery: Delivery) =>
      send(command, delivery).pipe(
        Effect.asVoid,
        Effect.catch((e) =>
          Effect.logWarning(`${command._tag} of task ${command.taskId} not applied: ${e.message}`)
        )
      )

    const maxRetriesOf = options.maxRetries ?? (() => AgentWorkerConfig.defaults.maxRetries)

    /**
     * Spawns children of a claimed task: registered under its lease first (so each child's end is expected),
     * then enqueued with the parent's id; a child that exists already (a retried turn) is left as it is.
     */
    const spawnChildren = (c: Claimed, counter: { n: number }, specs: ReadonlyArray<ChildSpec<unknown>>) =>
      Effect.gen(function*() {
        const at = yield* now
        const prepared = yield* Effect.forEach(specs, (spec) =>
          Effect.map(spec.agent.encodePayload(spec.payload), (payload) => ({
            id: childTaskId(c.taskId, c.turns, spec.key === undefined ? `#${counter.n++}` : `k:${spec.key}`),
            agent: spec.agent.name,
            payload
          })))
        if (prepared.length === 0) return []
        yield* send({
          _tag: "SpawnChildren",
          taskId: c.taskId,
          lease: c.lease,
          children: prepared.map(({ id, agent }) => ({ id, agent })),
          now: at
        })
        for (const p of prepared) c.children.add(p.id)
        const outcomes = yield* store.executeMany(prepared.map((p) => ({
          command: {
            _tag: "Enqueue" as const,
            taskId: p.id,
            agent: p.agent,
            ownerId: c.ownerId,
            payload: p.payload,
            maxRetries: maxRetriesOf(p.agent),
            parentId: c.taskId,
            now: at
          }
        })))
        for (const o of outcomes) if (!("values" in o) && o._tag !== "TaskAlreadyExists") return yield* Effect.fail(o)
        return prepared.map((p) => p.id)
      })

    const heartbeat = (c: Claimed, stop: Deferred.Deferred<StopReason>) =>
      Effect.gen(function*() {
        const at = yield* now
        const result = yield* Effect.result(
          store.execute({ _tag: "Heartbeat", taskId: c.taskId, lease: c.lease, worker: workerId, now: at }, c.delivery)
        )
        if (result._tag === "Success") {
          if (String(result.success.values[0]) === "1") yield* Deferred.succeed(stop, "cancel")
        } else if (result.failure._tag !== "RedisError") {
          yield* Effect.logWarning(`task ${c.taskId}: lease ${c.lease} lost (${result.failure.message}); stopping its turn`)
          yield* Deferred.succeed(stop, "lease")
        }
      }).pipe(Effect.repeat(Schedule.spaced(`${config.heartbeatInterval} seconds`)), Effect.delay(`${config.heartbeatInterval} seconds`))

    /** Why a turn is being interrupted: the stop reason if one was given, else its timeout. */
    const interruptReason = (why: { reason?: StopReason }) => why.reason ?? "timeout"

    const runTurn = (c: Claimed, why: { reason?: StopReason }): Effect.Effect<Verdict> =>
      Effect.gen(function*() {
        const decoded = yield* Effect.result(agent.decodePayload(c.payload))
        if (decoded._tag === "Failure") return { _tag: "Failed", error: decoded.failure, retry: "fatal" } as const
        const controller = new AbortController()
        const spawnCounter = { n: 0 }
        const ctx: TurnContext<unknown> = {
          taskId: c.taskId,
          ownerId: c.ownerId,
          agent: agent.name,
          payload: decoded.success,
          turn: c.turns,
          attempt: c.lease,
          retries: c.retries,
          steering: c.steering,
          signal: controller.signal,
          emit: (type, data) => options.onEmit?.(c.taskId, type, data),
          results: c.results,
          spawn: (specs) => Effect.runPromise(spawnChildren(c, spawnCounter, specs as ReadonlyArray<ChildSpec<unknown>>)),
          resultToken: newResultToken
        }
        const exit = yield* Effect.suspend(() => {
          const r = agent.runTurn(ctx)
          return Effect.isEffect(r)
            ? (r as Effect.Effect<TurnOutcome<unknown>, unknown>)
            : Effect.tryPromise({ try: () => r, catch: (e) => e })
        }).pipe(
          Effect.onInterrupt(() => Effect.sync(() => controller.abort(interruptReason(why)))),
          Effect.timeoutOrElse({
            duration: `${config.turnTimeout} seconds`,
            orElse: () => Effect.fail(new TurnTimeout({ seconds: config.turnTimeout }))
          }),
          Effect.exit
        )
        if (Exit.isSuccess(exit)) {
          const outcome = exit.value
          if (outcome._tag === "Done" && outcome.payload === undefined) return { _tag: "Outcome", outcome } as const
          const encoded = yield* Effect.result(agent.encodePayload(outcome.payload))
          if (encoded._tag === "Failure") return { _tag: "Failed", error: encoded.failure, retry: "fatal" } as const
          return {
            _tag: "Outcome",
            outcome: outcome._tag === "Continue"
              ? { _tag: "Continue", payload: encoded.success }
              : outcome._tag === "Wait"
              ? { _tag: "Wait", payload: encoded.success, pending: outcome.pending }
              : { _tag: "Done", output: outcome.output, payload: encoded.success }
          } as const
        }
        const error = Cause.squash(exit.cause)
        return { _tag: "Failed", error, retry: error instanceof TurnTimeout ? "retry" : classifyFailure(error) } as const
      })

    const finish = (c: Claimed, verdict: Verdict) =>
      Effect.gen(function*() {
        const at = yield* now
        const base = { taskId: c.taskId, lease: c.lease, now: at }
        const failFatally = (error: { message: string; _tag: string }) =>
          commit({ _tag: "Fail", ...base, error: { message: error.message, kind: error._tag }, retry: "fatal", retryAt: at }, c.delivery)
        switch (verdict._tag) {
          case "Outcome": {
            const outcome = verdict.outcome
            if (outcome._tag === "Wait") {
              // A wait the agent got wrong fails the task (it would wait for what never comes).
              const items = waitItems(c, outcome.pending, at)
              if (items instanceof InvalidInput) return yield* failFatally(items)
              const sent = yield* Effect.result(send({
                _tag: "Wait",
                ...base,
                payload: outcome.payload,
                steeringApplied: c.steering.length,
                pending: items
              }, c.delivery))
              if (Result.isSuccess(sent)) {
                const deadline = Math.min(...items.flatMap((i) => i.timeoutAt === undefined ? [] : [i.timeoutAt]))
                if (Number.isFinite(deadline)) options.onBackoff?.(deadline)
                return
              }
              if (sent.failure._tag === "InvalidWait") return yield* failFatally(sent.failure)
              return yield* Effect.logWarning(`Wait of task ${c.taskId} not applied: ${sent.failure.message}`)
            }
            return yield* commit(
              outcome._tag === "Continue"
                ? { _tag: "CompleteTurn", ...base, payload: outcome.payload, steeringApplied: c.steering.length }
                : {
                  _tag: "Complete",
                  ...base,
                  output: outcome.output,
                  steeringApplied: c.steering.length,
                  ...(outcome.payload !== undefined ? { payload: outcome.payload } : {})
                },
              c.delivery
            )
          }
          case "Failed": {
            const random = yield* Random.next
            const delay = backoffDelayMs(c.retries, random, config.backoffBase * 1000, config.backoffMax * 1000)
            const retryAfter = (verdict.error as { retryAfterMs?: number }).retryAfterMs
            const retryAt = at + Math.max(delay, retryAfter ?? 0)
            yield* commit({
              _tag: "Fail",
              ...base,
              error: { message: errorMessage(verdict.error), kind: errorKind(verdict.error) },
              retry: verdict.retry,
              retryAt
            }, c.delivery)
            if (verdict.retry === "backoff") options.onBackoff?.(retryAt)
            return
          }
          case "Stopped":
            if (verdict.reason === "cancel") return yield* commit({ _tag: "AcknowledgeCancel", ...base }, c.delivery)
            if (verdict.reason === "shutdown") return yield* commit({ _tag: "Release", ...base }, c.delivery)
            return // lease lost: the task is someone else's now
        }
      })

    const runClaimed = (c: Claimed) =>
      Effect.scoped(
        Effect.gen(function*() {
          const stop = yield* Deferred.make<StopReason>()
          running.set(c.taskId, stop)
          yield* control.watch(c.taskId, (notice) => {
            if (notice.type === "cancel") Deferred.doneUnsafe(stop, Exit.succeed("cancel"))
          })
          const beat = yield* Effect.forkScoped(heartbeat(c, stop))
          const why: { reason?: StopReason } = {}
          const verdict = yield* Effect.raceFirst(
            runTurn(c, why),
            Effect.map(Deferred.await(stop), (reason): Verdict => {
              why.reason = reason
              return { _tag: "Stopped", reason }
            })
          )
          yield* Fiber.interrupt(beat)
          yield* finish(c, verdict)
          // A task with a parent or children may have ended: tell the parent, cancel the children (or the sweep will).
          if (c.parentId !== undefined || c.batchId !== undefined || c.children.size > 0) {
            yield* settle(c.taskId).pipe(
              Effect.provideService(TaskStore, store),
              Effect.catch((e) => Effect.logWarning(`follow-up of task ${c.taskId} deferred to maintenance: ${e.message}`))
            )
          }
        })
      ).pipe(
        Effect.ensuring(Effect.sync(() => running.delete(c.taskId))),
        Effect.ensuring(slots.release(1)),
        Effect.catchCause((cause) => Effect.logError(`turn of task ${c.taskId} crashed`, cause))
      )

    const claimAll = (entries: ReadonlyArray<[string, ReadonlyArray<string>]>) =>
      Effect.gen(function*() {
        const at = yield* now
        const commands = entries.map(([entryId, fields]) => {
          const f = flatToRecord(fields)
          return {
            command: { _tag: "Claim" as const, taskId: f.t ?? "", lease: Number(f.l), worker: workerId, now: at },
            delivery: { entryId, agent: agent.name }
          }
        })
        const outcomes = yield* store.executeMany(commands)
        return outcomes.flatMap((o, i): ReadonlyArray<Claimed> => {
          if (!("values" in o)) return []
          const state = stateFromHash(flatToRecord(o.values[0] as ReadonlyArray<string>), sideDataFromReply(o.values.slice(1)))
          return [{
            taskId: state.taskId,
            ownerId: state.ownerId,
            lease: state.lease,
            payload: state.payload,
            turns: state.turns,
            retries: state.retries,
            steering: state.steering,
            delivery: commands[i]!.delivery,
            parentId: state.parentId,
            batchId: state.batchId,
            children: new Set(Object.keys(state.children)),
            results: resultsOf(state)
          }]
        })
      })

    const readLoop = (queue: string, conn: RedisConnection) =>
      Effect.gen(function*() {
        yield* slots.take(1)
        let free = 1
        while (free < config.batchSize && (yield* slots.takeIfAvailable(1))) free++
        const reply = yield* Effect.tryPromise({
          try: () =>
            conn.xreadgroup("GROUP", agent.name, workerId, "COUNT", free, "BLOCK", 1000, "STREAMS", queue, ">") as Promise<
              Array<[string, Array<[string, Array<string>]>]> | null
            >,
          catch: (cause) => toRedisError("xreadgroup", cause)
        }).pipe(Effect.onError(() => slots.release(free)))
        const entries = reply?.[0]?.[1] ?? []
        const claimed = yield* claimAll(entries).pipe(Effect.onError(() => slots.release(free)))
        if (free > claimed.length) yield* slots.release(free - claimed.length)
        for (const c of claimed) yield* FiberSet.run(turns, runClaimed(c))
      }).pipe(
        Effect.catch((e) =>
          Effect.logWarning(`${agent.name} reader: ${e.message}; retrying`).pipe(
            Effect.andThen(Effect.sleep("500 millis"))
          )
        ),
        Effect.forever
      )

    const readers = yield* Effect.forEach(queues, (queue) =>
      Effect.gen(function*() {
        const conn = yield* redis.dedicated(`reader ${queue}`)
        return yield* Effect.forkScoped(readLoop(queue, conn))
      }))

    // Graceful stop (runs before the readers' connections and the turn fibers are torn down):
    // stop claiming, give running turns `shutdownTimeout` to finish, then hand the rest back.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* Fiber.interruptAll(readers)
        const finished = yield* FiberSet.awaitEmpty(turns).pipe(Effect.timeoutOption(`${config.shutdownTimeout} seconds`))
        if (finished._tag === "None") {
          for (const stop of running.values()) Deferred.doneUnsafe(stop, Exit.succeed("shutdown"))
          yield* FiberSet.awaitEmpty(turns).pipe(Effect.timeoutOption("5 seconds"))
        }
      })
    )
    return { workerId, running: () => running.size }
  })

export type WorkerPool = Effect.Success<ReturnType<typeof runWorkerPool>>
