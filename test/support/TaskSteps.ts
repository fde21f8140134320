/**
 * Random task command sequences for the property tests of the decider and of the Redis store.
 *
 * A `Step` is abstract ("complete task 1 under the current lease, applying all steering"); `toCommand`
 * makes it concrete against the model's state at the moment it runs, so generated sequences stay
 * meaningful (leases current, previous or arbitrary; steering counts valid or not) and shrink well.
 * `applyCommand` is the pure model: `decide`, then `evolve` each event into the state, yielding the
 * envelopes the store must have written (heartbeats go to the partition log only).
 */
import fc from "fast-check"
import type { Decision, State, TaskCommand, TaskState } from "../../projections/TaskDecider.ts"
import { decide, evolve } from "../../projections/TaskDecider.ts"
import type { Envelope, TaskError, TaskEvent } from "../../streams/TaskEvent.ts"

/** Where generated time starts (ms since the epoch). */
export const T0 = 1_700_000_000_000

export const agents = ["alpha", "beta"] as const
export const workers = ["w1", "w2", "w3"] as const

/** JSON values (any Unicode text) as they come back from a JSON round trip (no -0, plain prototypes). */
export const json: fc.Arbitrary<unknown> = fc.jsonValue({ maxDepth: 2, stringUnit: "grapheme" }).map((v) =>
  JSON.parse(JSON.stringify(v))
)

/** Which lease a worker command names: the task's current one, the one before, or any small number. */
export type LeasePick = "current" | "previous" | number
const leasePick: fc.Arbitrary<LeasePick> = fc.oneof(
  { arbitrary: fc.constant("current" as const), weight: 7 },
  { arbitrary: fc.constant("previous" as const), weight: 2 },
  { arbitrary: fc.integer({ min: 0, max: 6 }), weight: 1 }
)

/** How many pending steering messages a turn reports applied; the last four are invalid. */
export type AppliedPick = "all" | "none" | "one" | "tooMany" | "negative" | "fraction" | "nan"
const appliedPick: fc.Arbitrary<AppliedPick> = fc.oneof(
  { arbitrary: fc.constantFrom("all" as const, "none" as const, "one" as const), weight: 12 },
  { arbitrary: fc.constantFrom("tooMany" as const, "negative" as const, "fraction" as const, "nan" as const), weight: 3 }
)

/** Time between steps in ms: often none (same-millisecond edges), else up to 1.5 s. */
export const elapsed: fc.Arbitrary<number> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 1_500 }) }
)

/** Backoff delays in ms: often 0 (due at once: retryAt = now), else up to many steps' time. */
const backoffDelay = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 20_000 }))

const taskError: fc.Arbitrary<TaskError> = fc.record({
  message: fc.string({ maxLength: 12, unit: "grapheme" }),
  kind: fc.constantFrom("timeout", "rate_limit", "tool", "fatal")
})

export type Step =
  | { readonly op: "Enqueue"; readonly task: number; readonly agent: number; readonly owner: string; readonly payload: unknown; readonly maxRetries: number }
  | { readonly op: "Claim" | "Heartbeat"; readonly task: number; readonly worker: number; readonly lease: LeasePick }
  | { readonly op: "CompleteTurn"; readonly task: number; readonly lease: LeasePick; readonly payload: unknown; readonly applied: AppliedPick }
  | {
    readonly op: "Complete"
    readonly task: number
    readonly lease: LeasePick
    readonly output: unknown
    readonly applied: AppliedPick
    /** The final turn's payload, when the agent gives one (undefined: none). */
    readonly payload?: unknown
  }
  | {
    readonly op: "Fail"
    readonly task: number
    readonly lease: LeasePick
    readonly error: TaskError
    readonly retry: "fatal" | "retry" | "backoff"
    readonly delay: number
  }
  | { readonly op: "AcknowledgeCancel" | "Release" | "Recover"; readonly task: number; readonly lease: LeasePick }
  | { readonly op: "Cancel" | "WakeUp" | "Expire"; readonly task: number }
  | { readonly op: "Steer"; readonly task: number; readonly messages: ReadonlyArray<unknown> }
  /** A command that fits the task's status (picked when the step runs), under the current lease. */
  | { readonly op: "Auto"; readonly task: number; readonly pick: number; readonly params: AutoParams }

/** Everything any command needs; `Auto` takes what its picked command uses. */
interface AutoParams {
  readonly worker: number
  readonly payload: unknown
  readonly applied: AppliedPick
  readonly error: TaskError
  readonly retry: "fatal" | "retry" | "backoff"
  readonly delay: number
  readonly messages: ReadonlyArray<unknown>
  /** On a task in backoff: run at its retry time or 1 ms before it (if still ahead). */
  readonly wakeAt: "retryAt" | "justBefore"
}

/**
 * The time of a step, from the time of the one before: `dt` later, except that an `Auto` step on a task in
 * backoff may run exactly at its retry time or 1 ms before it, so that wake-ups hit the boundary.
 */
export const advance = (now: number, { dt, step }: TimedStep, state: State): number => {
  if (step.op !== "Auto" || state?.status !== "backoff") return now + dt
  return Math.max(now, state.retryAt! - (step.params.wakeAt === "justBefore" ? 1 : 0))
}

/** A step and the time that passes before it (see `advance`). */
export interface TimedStep {
  readonly dt: number
  readonly step: Step
  /** For the store: sent in one pipeline with the step before it. The pure model ignores it. */
  readonly pipelined: boolean
}

const enqueueArb = (task: fc.Arbitrary<number>): fc.Arbitrary<Step> =>
  fc.record({
    op: fc.constant("Enqueue" as const),
    task,
    agent: fc.integer({ min: 0, max: agents.length - 1 }),
    owner: fc.constantFrom("u1", "u2", "o/ü\"x"),
    payload: json,
    maxRetries: fc.integer({ min: 0, max: 3 })
  })

/** Steps over `tasks` task ids; weights favour the transitions that move a task along. */
export const stepArb = (tasks: number): fc.Arbitrary<Step> => {
  const task = fc.integer({ min: 0, max: tasks - 1 })
  const w = (weight: number, arbitrary: fc.Arbitrary<Step>) => ({ weight, arbitrary })
  return fc.oneof(
    w(2, enqueueArb(task)),
    w(5, fc.record({ op: fc.constant("Claim" as const), task, worker: fc.nat(workers.length - 1), lease: leasePick })),
    w(1, fc.record({ op: fc.constant("Heartbeat" as const), task, worker: fc.nat(workers.length - 1), lease: leasePick })),
    w(3, fc.record({ op: fc.constant("CompleteTurn" as const), task, lease: leasePick, payload: json, applied: appliedPick })),
    w(2, fc.record({
      op: fc.constant("Complete" as const),
      task,
      lease: leasePick,
      output: json,
      applied: appliedPick,
      payload: fc.option(json, { nil: undefined })
    })),
    w(4, fc.record({
      op: fc.constant("Fail" as const),
      task,
      lease: leasePick,
      error: taskError,
      retry: fc.constantFrom("fatal" as const, "retry" as const, "backoff" as const),
      delay: backoffDelay
    })),
    w(3, fc.record({ op: fc.constantFrom("AcknowledgeCancel" as const, "Release" as const, "Recover" as const), task, lease: leasePick })),
    w(4, fc.record({ op: fc.constantFrom("Cancel" as const, "WakeUp" as const, "WakeUp" as const, "Expire" as const), task })),
    w(2, fc.record({ op: fc.constant("Steer" as const), task, messages: fc.array(json, { maxLength: 2 }) })),
    w(30, fc.record({ op: fc.constant("Auto" as const), task, pick: fc.nat(), params: autoParams }))
  )
}

const autoParams: fc.Arbitrary<AutoParams> = fc.record({
  worker: fc.nat(workers.length - 1),
  payload: json,
  applied: appliedPick,
  error: taskError,
  retry: fc.constantFrom("fatal" as const, "retry" as const, "retry" as const, "backoff" as const, "backoff" as const, "backoff" as const),
  delay: backoffDelay,
  messages: fc.array(json, { maxLength: 2 }),
  wakeAt: fc.constantFrom("retryAt" as const, "justBefore" as const)
})

/** The commands that make sense for a status (repeated ones are likelier). */
const fitting = (state: State): ReadonlyArray<Step["op"]> => {
  switch (state?.status) {
    case undefined:
      return ["Enqueue"]
    case "queued":
      return ["Claim", "Claim", "Claim", "Cancel", "Steer"]
    case "processing":
      if (state.cancelRequested) {
        return ["Cancel", "Heartbeat", "Steer", "CompleteTurn", "Complete", "Fail", "Release", "AcknowledgeCancel", "Recover"]
      }
      return [
        "CompleteTurn",
        "CompleteTurn",
        "CompleteTurn",
        "Complete",
        "Fail",
        "Fail",
        "Fail",
        "Release",
        "AcknowledgeCancel",
        "Recover",
        "Heartbeat",
        "Cancel",
        "Steer"
      ]
    case "backoff":
    case "waiting":
      return ["WakeUp", "WakeUp", "WakeUp", "Cancel", "Steer"]
    case "expired":
      return ["Enqueue", "Cancel", "WakeUp"]
    default:
      return ["Expire", "Expire", "Cancel", "Steer", "Claim"]
  }
}

/** The concrete step an `Auto` step stands for, given the task's state. */
const autoStep = (step: Extract<Step, { op: "Auto" }>, state: State): Step => {
  const ops = fitting(state)
  const op = ops[step.pick % ops.length]!
  const { task, params: p } = step
  const lease = "current" as const
  switch (op) {
    case "Enqueue":
      return { op, task, agent: task % agents.length, owner: "u1", payload: p.payload, maxRetries: 2 }
    case "Claim":
    case "Heartbeat":
      return { op, task, worker: p.worker, lease }
    case "CompleteTurn":
      return { op, task, lease, payload: p.payload, applied: p.applied }
    case "Complete":
      return { op, task, lease, output: p.payload, applied: p.applied }
    case "Fail":
      return { op, task, lease, error: p.error, retry: p.retry, delay: p.delay }
    case "AcknowledgeCancel":
    case "Release":
    case "Recover":
      return { op, task, lease }
    case "Cancel":
    case "WakeUp":
    case "Expire":
      return { op, task }
    case "Steer":
      return { op, task, messages: p.messages }
    case "Auto":
      throw new Error("an Auto step picks a concrete command")
  }
}

/** Up to `maxSteps` steps, after an enqueue of some of the tasks (so that most steps find a task). */
export const timedStepsArb = (tasks: number, maxSteps: number): fc.Arbitrary<ReadonlyArray<TimedStep>> => {
  const timed = (step: fc.Arbitrary<Step>) =>
    fc.record({
      dt: elapsed,
      step,
      pipelined: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) })
    })
  return fc
    .tuple(
      fc.array(timed(enqueueArb(fc.integer({ min: 0, max: tasks - 1 }))), { minLength: 1, maxLength: tasks }),
      fc.array(timed(stepArb(tasks)), { maxLength: maxSteps, size: "max" })
    )
    .map(([enqueues, steps]) => [...enqueues, ...steps])
}

export const taskIdOf = (task: number): string => `task-${task}`

/**
 * The task a step addresses. Each `task` number is a slot; once its task has expired, an `Auto` step
 * starts the slot's next task (`task-1`, then `task-1.1`, …), so runs do not idle on expired tasks.
 */
export const target = (step: Step, tasks: ReadonlyMap<string, TaskState>): { taskId: string; state: State } => {
  const idOf = (generation: number) => generation === 0 ? taskIdOf(step.task) : `${taskIdOf(step.task)}.${generation}`
  let generation = 0
  while (tasks.has(idOf(generation + 1))) generation++
  const state = tasks.get(idOf(generation))
  return step.op === "Auto" && state?.status === "expired"
    ? { taskId: idOf(generation + 1), state: undefined }
    : { taskId: idOf(generation), state }
}

const resolveLease = (pick: LeasePick, state: State): number =>
  pick === "current" ? state?.lease ?? 0 : pick === "previous" ? (state?.lease ?? 0) - 1 : pick

const resolveApplied = (pick: AppliedPick, state: State): number => {
  const pending = state?.steering.length ?? 0
  switch (pick) {
    case "all":
      return pending
    case "none":
      return 0
    case "one":
      return Math.min(1, pending)
    case "tooMany":
      return pending + 1
    case "negative":
      return -1
    case "fraction":
      return 0.5
    case "nan":
      return Number.NaN
  }
}

/** The concrete command for a step, given its task (see `target`) and the task's state at `now`. */
export const toCommand = (step: Step, { taskId, state }: { taskId: string; state: State }, now: number): TaskCommand => {
  switch (step.op) {
    case "Auto":
      return toCommand(autoStep(step, state), { taskId, state }, now)
    case "Enqueue":
      return {
        _tag: "Enqueue",
        taskId,
        agent: agents[step.agent]!,
        ownerId: step.owner,
        payload: step.payload,
        maxRetries: step.maxRetries,
        now
      }
    case "Claim":
    case "Heartbeat":
      return { _tag: step.op, taskId, lease: resolveLease(step.lease, state), worker: workers[step.worker]!, now }
    case "CompleteTurn":
      return {
        _tag: "CompleteTurn",
        taskId,
        lease: resolveLease(step.lease, state),
        payload: step.payload,
        steeringApplied: resolveApplied(step.applied, state),
        now
      }
    case "Complete":
      return {
        _tag: "Complete",
        taskId,
        lease: resolveLease(step.lease, state),
        output: step.output,
        steeringApplied: resolveApplied(step.applied, state),
        ...(step.payload !== undefined ? { payload: step.payload } : {}),
        now
      }
    case "Fail":
      return {
        _tag: "Fail",
        taskId,
        lease: resolveLease(step.lease, state),
        error: step.error,
        retry: step.retry,
        retryAt: now + step.delay,
        now
      }
    case "AcknowledgeCancel":
    case "Release":
    case "Recover":
      return { _tag: step.op, taskId, lease: resolveLease(step.lease, state), now }
    case "Cancel":
    case "WakeUp":
    case "Expire":
      return { _tag: step.op, taskId, now }
    case "Steer":
      return { _tag: "Steer", taskId, messages: step.messages, now }
  }
}

/** An envelope without its stream id: what both the model and the store must agree on. */
export type Recorded = Omit<Envelope, "id">

export interface Applied {
  readonly decision: Decision
  readonly state: State
  /** Every event as the partition log records it (heartbeats carry the version they follow). */
  readonly recorded: ReadonlyArray<Recorded>
}

/** The pure model of one command: decide, then fold the events in with the command's time. */
export const applyCommand = (command: TaskCommand, state: State): Applied => {
  const decision = decide(command, state)
  if (decision._tag === "Rejected") return { decision, state, recorded: [] }
  const agent = state?.agent ?? (command._tag === "Enqueue" ? command.agent : "")
  const ownerId = state?.ownerId ?? (command._tag === "Enqueue" ? command.ownerId : "")
  let current = state
  const recorded: Array<Recorded> = []
  for (const event of decision.events) {
    const envelope = { at: command.now, taskId: command.taskId, agent, ownerId, event }
    current = evolve(current, envelope)
    recorded.push({ ...envelope, version: current?.version ?? 0 })
  }
  return { decision, state: current, recorded }
}

/** Runs timed steps over a map of task states (the pure model on its own). */
export const runModel = (
  steps: ReadonlyArray<TimedStep>,
  onStep?: (command: TaskCommand, before: State, applied: Applied) => void
): Map<string, TaskState> => {
  const tasks = new Map<string, TaskState>()
  let now = T0
  for (const timed of steps) {
    const { step } = timed
    const task = target(step, tasks)
    const before = task.state
    now = advance(now, timed, before)
    const command = toCommand(step, task, now)
    const applied = applyCommand(command, before)
    if (applied.state !== undefined) tasks.set(command.taskId, applied.state)
    onStep?.(command, before, applied)
  }
  return tasks
}

/** Events stored in a task's history: all but heartbeats. */
export const isHistoryEvent = (event: TaskEvent): boolean => event._tag !== "TaskHeartbeat"
