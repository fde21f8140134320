/**
 * The worker pool of one agent in this process: a consumer of the agent's queue consumer group in every
 * partition, with `workers` turn slots. Readers block on XREADGROUP (dedicated connections) only while a
 * slot is free and claim what they read in one pipelined round trip. A slot whose turn ends commits it and
 * claims its next task from the same partition in the same round trip (the commit script, then `claimnext`),
 * so a busy queue costs one round trip per turn; the slot goes back to the readers when that queue is empty
 * (or, with several partitions, after a run of turns, so no partition waits behind a busy one).
 * One heartbeat loop per pool renews the leases of all running turns in one pipelined round trip, each once per
 * `heartbeatInterval` (0.75–1 of it) after its claim or previous renewal.
 *
 * A turn ends in exactly one command under its lease: CompleteTurn, Wait, Complete, Fail, AcknowledgeCancel
 * (cancelled) or Release (shutdown). A lost lease (heartbeat rejected) interrupts the turn and commits
 * nothing; a zombie's late commit is rejected by the scripts anyway. A turn may spawn child tasks before
 * it ends (SpawnChildren under its lease, then the children's enqueues). When the commit's reply says it ended
 * the task with a follow-up step due (a parent, batch or children to tell), the worker runs the step
 * (src/FollowUp.ts).
 */
import { hostname } from "node:os"
import { randomUUID } from "node:crypto"
import { Cause, Effect, Exit, Fiber, FiberSet, Random, Result, Schedule, Semaphore, Schema } from "effect"
import { checkpointDelta, type PayloadChain } from "../projections/PayloadDelta.ts"
import type { Checkpoint, TaskCommand } from "../projections/TaskDecider.ts"
import { partitionKeys, allPartitions } from "../streams/Keys.ts"
import { RedisClient, type RedisConnection } from "../streams/RedisClient.ts"
import { type RedisError, toRedisError } from "../streams/StreamError.ts"
import { TaskId, type WaitItem } from "../streams/TaskEvent.ts"
import {
  type ApiKeys,
  type ChildSpec,
  childTaskId,
  type DeliveredResult,
  newResultToken,
  type RunnableAgent,
  type TurnContext,
  type TurnOutcome,
  type WaitSpec
} from "./Agent.ts"
import { backoffDelayMs, classifyFailure, errorKind, errorMessage, FatalAgentError, type RetryDecision, TurnTimeout } from "./AgentErrors.ts"
import { AgentWorkerConfig } from "./Config.ts"
import { ControlChannel } from "./ControlChannel.ts"
import { InvalidInput, type TaskRejected } from "./Errors.ts"
import { settle } from "./FollowUp.ts"
import { type Accepted, type ClaimedTask, claimedTask, flatToRecord, followUpDue, TaskStore, type Delivery } from "./TaskStore.ts"

export const makeWorkerId = (): string => `${hostname()}-${process.pid}-${randomUUID().slice(0, 6)}`

type StopReason = "cancel" | "lease" | "shutdown"

/**
 * Why a running turn must stop, set once (a cancel notice, a heartbeat reply, shutdown). A plain object
 * rather than a Deferred: the turn's own callback listens to it, so a turn needs no fiber of its own.
 */
interface StopSignal {
  reason: StopReason | undefined
  listener: ((reason: StopReason) => void) | undefined
}

const signalStop = (s: StopSignal, reason: StopReason): void => {
  if (s.reason !== undefined) return
  s.reason = reason
  s.listener?.(reason)
}

/** Resumes with the stop reason once there is one (for turns written as Effects, raced against it). */
const awaitStop = (s: StopSignal): Effect.Effect<StopReason> =>
  Effect.callback<StopReason>((resume) => {
    if (s.reason !== undefined) return resume(Effect.succeed(s.reason))
    const listener = (reason: StopReason) => resume(Effect.succeed(reason))
    s.listener = listener // not a literal assigned to a property, which would keep the turn's data past young GCs (ADR 0025)
    return Effect.sync(() => {
      s.listener = undefined
    })
  })

/** How a Promise turn ended. */
type Settled =
  | { readonly _tag: "Returned"; readonly outcome: TurnOutcome<unknown> }
  | { readonly _tag: "Threw"; readonly error: unknown }
  | { readonly _tag: "Stopped"; readonly reason: StopReason }

/** With several partitions, how many turns in a row a slot takes from one partition before it lets the readers choose. */
const MAX_RUN_ON_ONE_PARTITION = 16

type Verdict =
  | { readonly _tag: "Outcome"; readonly outcome: TurnOutcome<unknown> }
  | { readonly _tag: "Failed"; readonly error: unknown; readonly retry: RetryDecision }
  | { readonly _tag: "Stopped"; readonly reason: StopReason }

interface Claimed {
  readonly taskId: string
  readonly ownerId: string
  readonly lease: number
  readonly payload: unknown
  /** What reading the payload cost the claim (ADR 0018: whether the next checkpoint may be a delta). */
  readonly payloadChain: PayloadChain
  readonly turns: number
  readonly retries: number
  readonly steering: ReadonlyArray<unknown>
  readonly delivery: Delivery
  /** The partition whose queue the task came from (the slot's next claim reads the same queue). */
  readonly partition: number
  /** The children the task had spawned when claimed, and those this turn spawns. */
  readonly children: Set<string>
  /** What arrived for the wait this turn resumes from (in the wait's order). */
  readonly results: ReadonlyArray<DeliveredResult>
}

/** The results of the wait a claimed task resumes from, in the wait's order. */
const resultsOf = (task: ClaimedTask): ReadonlyArray<DeliveredResult> =>
  task.wait.flatMap((item) => {
    const result = task.results[item.id]
    return result === undefined ? [] : [{ id: item.id, ...result }]
  })

/** A claim's reply (see claim.lua) as the worker's view of the task. */
const claimedOf = (taskId: string, accepted: Accepted, delivery: Delivery, partition: number): Claimed => {
  const task = claimedTask(accepted.values)
  return {
    taskId,
    ownerId: task.ownerId,
    lease: task.lease,
    payload: task.payload,
    payloadChain: task.payloadChain,
    turns: task.turns,
    retries: task.retries,
    steering: task.steering,
    delivery,
    partition,
    children: new Set(Object.keys(task.children)),
    results: resultsOf(task)
  }
}

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
  readonly agent: RunnableAgent
  readonly config: AgentWorkerConfig
  readonly workerId: string
  /** Told when a task goes into backoff or starts waiting with a deadline, so local maintenance acts on time. */
  readonly onBackoff?: (retryAt: number) => void
  /** Custom events from turns (`ctx.emit`). */
  readonly onEmit?: (task: { readonly taskId: string; readonly ownerId: string }, type: string, data: unknown) => void
  /** Max retries of the child tasks a turn spawns, by agent (default: AgentWorkerConfig's). */
  readonly maxRetries?: (agent: string) => number
  /** The orchestrator's API keys, handed to every turn (`TurnContext.apiKeys`). */
  readonly apiKeys?: ApiKeys
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
    const partitions = allPartitions(ks)
    const queues = partitions.map((p) => partitionKeys(ks, p).queue(agent.name))
    yield* redis.use("xgroup create", (c) => ensureGroups(c, queues, agent.name))

    const slots = yield* Semaphore.make(config.workers)
    const turns = yield* FiberSet.make<void, never>()
    /** The running turns: their claim, their stop signal and when their lease was last renewed (claim or heartbeat, ms). */
    const running = new Map<string, { readonly claimed: Claimed; readonly stop: StopSignal; renewed: number }>()
    /** Set when the pool starts stopping: finished turns then commit without claiming more work. */
    let stopping = false

    const clock = yield* Effect.clockWith((c) => Effect.succeed(c))
    /** The time now, read without an Effect (the per-turn path keeps its Effect steps few). */
    const nowMs = () => clock.currentTimeMillisUnsafe()
    const now = Effect.sync(nowMs)

    /** The tasks whose commit just ended them with a follow-up step due (lib.lua's follow_up_due). */
    const followUps = new Set<string>()
    const noteFollowUp = (taskId: string, accepted: Accepted) => {
      if (followUpDue(accepted.values)) followUps.add(taskId)
    }

    /** Sends a worker command; a connection problem is retried a few times. */
    const send = (command: TaskCommand, delivery?: Delivery) =>
      store.execute(command, delivery).pipe(
        Effect.retry({
          while: (e) => e._tag === "RedisError" && e.isRetryable,
          schedule: Schedule.exponential("100 millis").pipe(Schedule.upTo({ times: 8 }))
        }),
        Effect.tap((accepted) => Effect.sync(() => noteFollowUp(command.taskId, accepted)))
      )

    /**
     * Logs a commit that was not applied. A resend of a commit whose first send was applied (its reply lost to a
     * dropped connection) is rejected as stale with the task in the very status that commit leaves under its own
     * lease; where no other transition can leave that (Complete: completed, Wait: waiting — a recovery fails,
     * requeues or cancels), it is reported as applied, not as a warning.
     */
    const notApplied = (command: TaskCommand, e: TaskRejected | RedisError) => {
      const appliedStatus = command._tag === "Complete" ? "completed" : command._tag === "Wait" ? "waiting" : undefined
      return e._tag === "StaleLease" && e.currentLease === e.lease && e.status === appliedStatus
        ? Effect.logDebug(`${command._tag} of task ${command.taskId} was applied by an earlier send (its reply was lost)`)
        : Effect.logWarning(`${command._tag} of task ${command.taskId} not applied: ${e.message}`)
    }

    /** Sends a worker command; a rejection is only logged. */
    const commit = (command: TaskCommand, delivery: Delivery) =>
      send(command, delivery).pipe(Effect.asVoid, Effect.catch((e) => notApplied(command, e)))

    const maxRetriesOf = options.maxRetries ?? (() => AgentWorkerConfig.defaults.maxRetries)

    /**
     * Spawns children of a claimed task: registered under its lease first (so each child's end is expected),
     * then enqueued with the parent's id; a child that exists already (a retried turn) is left as it is.
     */
    const spawnChildren = (c: Claimed, counter: { n: number }, specs: ReadonlyArray<ChildSpec<unknown>>) =>
      Effect.gen(function*() {
        const at = yield* now
        const prepared = yield* Effect.forEach(specs, (spec) =>
          Effect.map(Effect.fromResult(spec.agent.encodePayload(spec.payload)), (payload) => ({
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

    /**
     * Every quarter interval, renews the running leases last renewed at least three quarters of an interval ago
     * (so each is renewed once per 0.75–1 interval after its claim or its previous heartbeat), all in one
     * pipelined round trip. A reply that says cancel stops that turn as cancelled; a rejection (lease lost)
     * stops it without a commit. A connection problem is left to the next round.
     */
    const heartbeatAll = Effect.gen(function*() {
      const at = nowMs()
      const due = [...running.values()].filter((r) => at - r.renewed >= (config.heartbeatInterval * 1000 * 3) / 4)
      if (due.length === 0) return
      const outcomes = yield* store.executeMany(due.map(({ claimed: c }) => ({
        command: { _tag: "Heartbeat" as const, taskId: c.taskId, lease: c.lease, worker: workerId, now: at },
        delivery: c.delivery
      })))
      for (let i = 0; i < due.length; i++) {
        const o = outcomes[i]!
        const { claimed: c, stop } = due[i]!
        if (running.get(c.taskId) !== due[i]) continue // that turn ended meanwhile
        if ("values" in o) {
          due[i]!.renewed = at
          if (String(o.values[0]) === "1") signalStop(stop, "cancel")
        } else {
          yield* Effect.logWarning(`task ${c.taskId}: lease ${c.lease} lost (${o.message}); stopping its turn`)
          signalStop(stop, "lease")
        }
      }
    }).pipe(
      Effect.catch((e) => Effect.logWarning(`${agent.name} heartbeats: ${e.message}; retrying next round`)),
      Effect.repeat(Schedule.spaced(`${(config.heartbeatInterval * 1000) / 4} millis`)),
      Effect.delay(`${(config.heartbeatInterval * 1000) / 4} millis`)
    )

    const failedVerdict = (error: unknown): Verdict => ({
      _tag: "Failed",
      error,
      retry: error instanceof TurnTimeout ? "retry" : classifyFailure(error)
    })

    /** The verdict of a turn that returned: its payload encoded (a payload that does not encode fails the task). */
    const outcomeVerdict = (outcome: TurnOutcome<unknown>): Verdict => {
      if (outcome._tag === "Done" && outcome.payload === undefined) return { _tag: "Outcome", outcome }
      const encoded = agent.encodePayload(outcome.payload)
      if (encoded._tag === "Failure") return { _tag: "Failed", error: encoded.failure, retry: "fatal" }
      return {
        _tag: "Outcome",
        outcome: outcome._tag === "Continue"
          ? { _tag: "Continue", payload: encoded.success }
          : outcome._tag === "Wait"
          ? { _tag: "Wait", payload: encoded.success, pending: outcome.pending }
          : { _tag: "Done", output: outcome.output, payload: encoded.success }
      }
    }

    /**
     * Runs the agent's turn until it returns, fails, times out (`turnTimeout`) or is stopped; every way out
     * but a return aborts `ctx.signal` with the reason. A turn returning a Promise is awaited in one callback
     * (its result, its timer and the stop signal, whichever comes first): no fiber per turn. A turn written
     * as an Effect runs raced against the stop signal under a timeout.
     */
    const runTurn = (c: Claimed, stop: StopSignal): Effect.Effect<Verdict> =>
      Effect.suspend((): Effect.Effect<Verdict> => {
        const decoded = agent.decodePayload(c.payload)
        if (decoded._tag === "Failure") return Effect.succeed({ _tag: "Failed", error: decoded.failure, retry: "fatal" })
        if (stop.reason !== undefined) return Effect.succeed({ _tag: "Stopped", reason: stop.reason })
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
          emit: (type, data) => options.onEmit?.(c, type, data),
          results: c.results,
          spawn: (specs) => Effect.runPromise(spawnChildren(c, spawnCounter, specs as ReadonlyArray<ChildSpec<unknown>>)),
          resultToken: newResultToken,
          apiKeys: options.apiKeys
        }
        let started: ReturnType<typeof agent.runTurn>
        try {
          started = agent.runTurn(ctx)
        } catch (e) {
          return Effect.succeed(failedVerdict(e))
        }
        if (Effect.isEffect(started)) {
          return Effect.raceFirst(
            (started as Effect.Effect<TurnOutcome<unknown>, unknown>).pipe(
              Effect.onInterrupt(() => Effect.sync(() => controller.abort(stop.reason ?? "timeout"))),
              Effect.timeoutOrElse({
                duration: `${config.turnTimeout} seconds`,
                orElse: () => Effect.fail(new TurnTimeout({ seconds: config.turnTimeout }))
              }),
              Effect.exit
            ),
            Effect.map(awaitStop(stop), (reason) => Exit.succeed<TurnOutcome<unknown> | StopReason>(reason))
          ).pipe(
            Effect.flatMap((exit): Effect.Effect<Verdict> => {
              if (Exit.isFailure(exit)) return Effect.succeed(failedVerdict(Cause.squash(exit.cause)))
              const v = exit.value
              return Effect.succeed(typeof v === "string" ? { _tag: "Stopped", reason: v } : outcomeVerdict(v))
            })
          )
        }
        const promise = started as Promise<TurnOutcome<unknown>>
        return Effect.map(
          Effect.callback<Settled>((resume) => {
            let done = false
            const settle = (s: Settled) => {
              if (done) return
              done = true
              clearTimeout(timer)
              stop.listener = undefined
              if (s._tag === "Stopped") controller.abort(s.reason)
              else if (s._tag === "Threw" && s.error instanceof TurnTimeout) controller.abort("timeout")
              resume(Effect.succeed(s))
            }
            const timer = setTimeout(
              () => settle({ _tag: "Threw", error: new TurnTimeout({ seconds: config.turnTimeout }) }),
              config.turnTimeout * 1000
            )
            const onStop = (reason: StopReason) => settle({ _tag: "Stopped", reason })
            stop.listener = onStop // see awaitStop
            Promise.resolve(promise).then(
              (outcome) => settle({ _tag: "Returned", outcome }),
              (error: unknown) => settle({ _tag: "Threw", error })
            )
            return Effect.sync(() => {
              done = true
              clearTimeout(timer)
              stop.listener = undefined
              controller.abort(stop.reason ?? "shutdown")
            })
          }),
          (settled): Verdict =>
            settled._tag === "Returned"
              ? outcomeVerdict(settled.outcome)
              : settled._tag === "Threw" ? failedVerdict(settled.error) : { _tag: "Stopped", reason: settled.reason }
        )
      })

    /**
     * Commits a finished turn and, when `claimNext`, claims the slot's next task from the same partition in the
     * same round trip. A commit that could not be sent is retried like `commit`; a rejected one is only logged.
     */
    const commitAndClaim = (c: Claimed, command: TaskCommand, claimNext: boolean): Effect.Effect<Claimed | undefined> => {
      if (!claimNext || stopping) return Effect.as(commit(command, c.delivery), undefined)
      return Effect.flatMap(
        store.claimNext({ agent: agent.name, partition: c.partition, worker: workerId, count: 1, now: command.now }, {
          command,
          delivery: c.delivery
        }),
        ({ outcome, claims }) => {
          const [next] = claims.flatMap((e) =>
            "values" in e.outcome ? [claimedOf(e.taskId, e.outcome, { entryId: e.entryId, agent: agent.name }, c.partition)] : []
          )
          if (outcome === undefined) return Effect.succeed(next)
          if ("values" in outcome) {
            noteFollowUp(command.taskId, outcome)
            return Effect.succeed(next)
          }
          return Effect.as(
            outcome._tag === "RedisError" && outcome.isRetryable
              ? commit(command, c.delivery) // sent again: if it was applied after all, the resend is rejected (logged)
              : notApplied(command, outcome),
            next
          )
        }
      )
    }

    /** How a turn's payload is recorded: whole, or (`checkpointDeltas`) as what changed since the claim's (ADR 0018). */
    const checkpointOf = (c: Claimed, payload: unknown): Checkpoint => {
      const payloadDelta = config.checkpointDeltas ? checkpointDelta(c.payload, payload, c.payloadChain) : undefined
      return payloadDelta === undefined ? { payload } : { payloadDelta }
    }

    /** Ends a turn that waits (Wait): its items checked, then sent alone (a waiting task frees its slot). */
    const finishWait = (
      c: Claimed,
      outcome: Extract<TurnOutcome<unknown>, { _tag: "Wait" }>,
      base: { readonly taskId: string; readonly lease: number; readonly now: number }
    ) =>
      Effect.gen(function*() {
        const at = base.now
        const failFatally = (error: { message: string; _tag: string }) =>
          commit({ _tag: "Fail", ...base, error: { message: error.message, kind: error._tag }, retry: "fatal", retryAt: at }, c.delivery)
        // A wait the agent got wrong fails the task (it would wait for what never comes).
        const items = waitItems(c, outcome.pending, at)
        if (items instanceof InvalidInput) return yield* failFatally(items)
        const wait: TaskCommand = { _tag: "Wait", ...base, ...checkpointOf(c, outcome.payload), steeringApplied: c.steering.length, pending: items }
        const sent = yield* Effect.result(send(wait, c.delivery))
        if (Result.isSuccess(sent)) {
          const deadline = Math.min(...items.flatMap((i) => i.timeoutAt === undefined ? [] : [i.timeoutAt]))
          if (Number.isFinite(deadline)) options.onBackoff?.(deadline)
          return
        }
        if (sent.failure._tag === "InvalidWait") return yield* failFatally(sent.failure)
        return yield* notApplied(wait, sent.failure)
      })

    /**
     * Ends a turn with its one command; returns the slot's next task when one was claimed with it. A plain
     * function returning the command's Effect, not a generator: a turn that continues or completes, the usual
     * case, takes no Effect step here (an `Effect.gen` per turn cost ~2.5 µs of client CPU in a micro-benchmark).
     */
    const finish = (c: Claimed, verdict: Verdict, claimNext: boolean): Effect.Effect<Claimed | undefined> => {
      const at = nowMs()
      const base = { taskId: c.taskId, lease: c.lease, now: at }
      switch (verdict._tag) {
        case "Outcome": {
          const outcome = verdict.outcome
          switch (outcome._tag) {
            case "Wait":
              return Effect.as(finishWait(c, outcome, base), undefined)
            case "Continue":
              return commitAndClaim(c, { _tag: "CompleteTurn", ...base, ...checkpointOf(c, outcome.payload), steeringApplied: c.steering.length }, claimNext)
            case "Done":
              return commitAndClaim(c, {
                _tag: "Complete",
                ...base,
                output: outcome.output,
                steeringApplied: c.steering.length,
                ...(outcome.payload !== undefined ? checkpointOf(c, outcome.payload) : {})
              }, claimNext)
          }
        }
        case "Failed":
          return Effect.flatMap(Random.next, (random) => {
            const delay = backoffDelayMs(c.retries, random, config.backoffBase * 1000, config.backoffMax * 1000)
            const retryAfter = (verdict.error as { retryAfterMs?: number }).retryAfterMs
            const retryAt = at + Math.max(delay, retryAfter ?? 0)
            const error = { message: errorMessage(verdict.error), kind: errorKind(verdict.error) }
            return Effect.tap(
              commitAndClaim(c, { _tag: "Fail", ...base, error, retry: verdict.retry, retryAt }, claimNext),
              () =>
                Effect.sync(() => {
                  if (verdict.retry === "backoff") options.onBackoff?.(retryAt)
                })
            )
          })
        case "Stopped":
          if (verdict.reason === "cancel") return commitAndClaim(c, { _tag: "AcknowledgeCancel", ...base }, claimNext)
          if (verdict.reason === "shutdown") return Effect.as(commit({ _tag: "Release", ...base }, c.delivery), undefined)
          return Effect.succeed(undefined) // lease lost: the task is someone else's now
      }
    }

    /** One turn of a claimed task, from start to commit; returns the slot's next task, if it claimed one. */
    const runClaimed = (c: Claimed, claimNext: boolean): Effect.Effect<Claimed | undefined> =>
      Effect.suspend(() => {
        const stop: StopSignal = { reason: undefined, listener: undefined }
        const entry = { claimed: c, stop, renewed: nowMs() }
        running.set(c.taskId, entry)
        const unwatch = control.watchUnsafe(c.taskId, (notice) => {
          if (notice.type === "cancel") signalStop(stop, "cancel")
        })
        if (stopping) signalStop(stop, "shutdown")
        return runTurn(c, stop).pipe(
          Effect.ensuring(Effect.sync(() => {
            unwatch()
            if (running.get(c.taskId) === entry) running.delete(c.taskId)
          })),
          Effect.flatMap((verdict) => finish(c, verdict, claimNext)),
          // The commit ended the task with a follow-up step due: tell its parent and batch, cancel its children,
          // now (the outbox has it too, so a step that fails here is maintenance's).
          Effect.tap(() =>
            followUps.delete(c.taskId)
              ? settle(c.taskId).pipe(
                Effect.provideService(TaskStore, store),
                Effect.catch((e) => Effect.logWarning(`follow-up of task ${c.taskId} deferred to maintenance: ${e.message}`))
              )
              : Effect.void
          ),
          Effect.catchCause((cause) => Effect.as(Effect.logError(`turn of task ${c.taskId} crashed`, cause), undefined))
        )
      })

    // Per-call data reaches the generators below as arguments: a generator literal made per call that closes over
    // it keeps it reachable through young-generation collections until a full GC (ADR 0025).

    /**
     * A turn slot: runs the claimed task's turn, then the next task it claimed with the commit, until the
     * queue of its partition has none (or, with several partitions, a run of turns ended); then frees the slot.
     */
    const runSlot = Effect.fnUntraced(function*(first: Claimed) {
      let c: Claimed | undefined = first
      for (let n = 1; c !== undefined; n++) {
        c = yield* runClaimed(c, partitions.length === 1 || n < MAX_RUN_ON_ONE_PARTITION)
      }
    }, Effect.ensuring(slots.release(1)))

    const claimAll = Effect.fnUntraced(function*(partition: number, entries: ReadonlyArray<[string, ReadonlyArray<string>]>) {
      const at = nowMs()
      const commands = entries.map(([entryId, fields]) => {
        const f = flatToRecord(fields)
        return {
          command: { _tag: "Claim" as const, taskId: f.t ?? "", lease: Number(f.l), worker: workerId, now: at },
          delivery: { entryId, agent: agent.name }
        }
      })
      const outcomes = yield* store.executeMany(commands)
      return outcomes.flatMap((o, i): ReadonlyArray<Claimed> =>
        "values" in o ? [claimedOf(commands[i]!.command.taskId, o, commands[i]!.delivery, partition)] : []
      )
    })

    /** Claims the entries read and starts a turn slot for each claimed task (`free` slots were taken for them). */
    const startClaimed = Effect.fnUntraced(function*(
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
      partition: number,
      entries: ReadonlyArray<[string, ReadonlyArray<string>]>,
      free: number
    ) {
      const claimed = yield* claimAll(partition, entries).pipe(Effect.onError(() => slots.release(free)))
      if (free > claimed.length) yield* slots.release(free - claimed.length)
      for (const c of claimed) yield* FiberSet.run(turns, restore(runSlot(c)))
    })

    const readLoop = (partition: number, conn: RedisConnection) =>
      Effect.gen(function*() {
        const queue = queues[partition]!
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
        // Entries read are claimed and their turns started even when the pool starts stopping meanwhile (those
        // turns hand their tasks back at once): interrupted mid-claim, the lease taken in Redis would wait for
        // recovery after the heartbeat timeout instead of being released by the graceful stop.
        yield* Effect.uninterruptibleMask((restore) => startClaimed(restore, partition, entries, free))
      }).pipe(
        Effect.catch((e) =>
          Effect.logWarning(`${agent.name} reader: ${e.message}; retrying`).pipe(
            Effect.andThen(Effect.sleep("500 millis"))
          )
        ),
        Effect.forever
      )

    const readers = yield* Effect.forEach(partitions, (partition) =>
      Effect.gen(function*() {
        const conn = yield* redis.dedicated(`reader ${queues[partition]}`)
        return yield* Effect.forkScoped(readLoop(partition, conn))
      }))
    const beats = yield* Effect.forkScoped(heartbeatAll)

    // Graceful stop (runs before the readers' connections and the turn fibers are torn down):
    // stop claiming, give running turns `shutdownTimeout` to finish, then hand the rest back.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        stopping = true
        yield* Fiber.interruptAll(readers)
        const finished = yield* FiberSet.awaitEmpty(turns).pipe(Effect.timeoutOption(`${config.shutdownTimeout} seconds`))
        if (finished._tag === "None") {
          for (const r of running.values()) signalStop(r.stop, "shutdown")
          yield* FiberSet.awaitEmpty(turns).pipe(Effect.timeoutOption("5 seconds"))
        }
        yield* Fiber.interrupt(beats)
      })
    )
    return { workerId, running: () => running.size }
  })

export type WorkerPool = Effect.Success<ReturnType<typeof runWorkerPool>>
