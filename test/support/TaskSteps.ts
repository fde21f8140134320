/**
 * Random task command sequences for the property tests of the decider and of the Redis store.
 *
 * A `Step` is abstract ("complete task 1 under the current lease, applying all steering"); `toCommand`
 * makes it concrete against the model's state at the moment it runs, so generated sequences stay
 * meaningful (leases current, previous or arbitrary; steering counts valid or not) and shrink well.
 * `applyCommand` is the pure model: `decide`, then `evolve` each event into the state, yielding the
 * envelopes the store must have written (heartbeats go to the partition log only).
 *
 * Waiting: a turn may spawn children (ids `kid-<task>-<n>`) and end waiting for them and for deferred results
 * (ids `r0`..`r2`, reused across waits); results are delivered (right, wrong or no token; once or twice), children
 * report their ends (also before their parent parked, or twice), and wait items time out (fail or resume).
 *
 * Checkpoints: a turn's payload is a new JSON value, or (`Grow`) the task's payload grown as a conversation
 * grows, sent as the delta a worker would send (ADR 0018), so chains of deltas with whole payloads between them
 * are stored, claimed and read.
 */
import fc from "fast-check"
import { payloadDelta } from "../../projections/PayloadDelta.ts"
import type { Checkpoint, Decision, State, TaskCommand, TaskState } from "../../projections/TaskDecider.ts"
import { decide, evolve, outstanding } from "../../projections/TaskDecider.ts"
import type { ChildEnd, Envelope, TaskError, TaskEvent, WaitItem } from "../../streams/TaskEvent.ts"

/** Where generated time starts (ms since the epoch). */
export const T0 = 1_700_000_000_000

export const agents = ["alpha", "beta"] as const
export const workers = ["w1", "w2", "w3"] as const

/**
 * JSON values (any Unicode text) as they come back from a JSON round trip (no -0, plain prototypes); one in
 * twenty is a text of 1-2 KB, over the size past which the partition log leaves a payload out (ADR 0017).
 */
export const json: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 19, arbitrary: fc.jsonValue({ maxDepth: 2, stringUnit: "grapheme" }) },
  { weight: 1, arbitrary: fc.string({ minLength: 1024, maxLength: 2048 }) }
).map((v) => JSON.parse(JSON.stringify(v)))

/**
 * A turn's payload that grows the task's current one as an agent's would: `value` appended to its `messages`, a
 * word to its `notes` text and the turn to `state.turns` (a nested object: so deltas `append` elements and
 * characters and `patch` an object field), `turn` set.
 */
export class Grow {
  readonly value: unknown
  constructor(value: unknown) {
    this.value = value
  }
}

/** A turn's payload: a new JSON value, or (2 in 5) one that grows the task's current payload. */
const checkpointPayload: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: json },
  { weight: 2, arbitrary: json.map((v) => new Grow(v)) }
)

/**
 * The checkpoint a worker sends for a step's payload: a JSON value whole; a `Grow` as the delta from the task's
 * current payload (whole when that is not an object).
 */
export const checkpointOf = (payload: unknown, state: State, now: number): Checkpoint => {
  if (!(payload instanceof Grow)) return { payload }
  const current = state?.payload
  const base = typeof current === "object" && current !== null && !Array.isArray(current) ? current as Record<string, unknown> : {}
  const nested = typeof base.state === "object" && base.state !== null && !Array.isArray(base.state) ? base.state as Record<string, unknown> : {}
  const grown = {
    ...base,
    messages: [...(Array.isArray(base.messages) ? base.messages : []), payload.value],
    notes: `${typeof base.notes === "string" ? base.notes : ""} turn`,
    state: { ...nested, turns: [...(Array.isArray(nested.turns) ? nested.turns : []), now] },
    turn: now
  }
  const delta = payloadDelta(current, grown)
  return delta === undefined ? { payload: grown } : { payloadDelta: delta }
}

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

/**
 * One wait item: a deferred result `r<n % 3>`, a child of the task (by index; a result when it has none), a
 * child's id used as a result, or a child never spawned (the last two: invalid waits).
 */
export interface ItemPick {
  readonly kind: "result" | "child" | "childAsResult" | "unknownChild"
  readonly n: number
  /** ms from now, or none. */
  readonly timeout: number | undefined
  readonly onTimeout: "fail" | "resume" | undefined
}
/** Which id a delivery names: an outstanding item, one that has its result, or any id. */
export type IdPick = "outstanding" | "received" | "any"
/** Which child reports: a running one, one that reported already, or one never spawned. */
export type ChildPick = "running" | "reported" | "unknown"

export type Step =
  | {
    readonly op: "Enqueue"
    readonly task: number
    readonly agent: number
    readonly owner: string
    readonly payload: unknown
    readonly maxRetries: number
    /** A parent task (by number) or batch, for the outbox: a finished child or batch member must be followed up. */
    readonly parent?: number | undefined
    readonly batch?: string | undefined
  }
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
  | {
    readonly op: "Wait"
    readonly task: number
    readonly lease: LeasePick
    readonly payload: unknown
    readonly applied: AppliedPick
    readonly items: ReadonlyArray<ItemPick>
  }
  | { readonly op: "Spawn"; readonly task: number; readonly lease: LeasePick; readonly children: ReadonlyArray<number> }
  | {
    readonly op: "Deliver"
    readonly task: number
    readonly id: IdPick
    readonly n: number
    readonly result: unknown
    readonly token: "right" | "wrong" | "none"
  }
  | {
    readonly op: "ChildFinished"
    readonly task: number
    readonly child: ChildPick
    readonly n: number
    readonly status: ChildEnd
    readonly output: unknown
    readonly error: TaskError
  }
  | { readonly op: "TimeoutWait"; readonly task: number }
  /** A command that fits the task's status (picked when the step runs), under the current lease. */
  | {
    readonly op: "Auto"
    readonly task: number
    readonly pick: number
    readonly params: AutoParams
    /** `waits`: prefer the commands of the waiting lifecycle (spawn, wait, results, timeouts). */
    readonly focus?: "waits"
  }

/** Everything any command needs; `Auto` takes what its picked command uses. */
interface AutoParams {
  readonly worker: number
  readonly payload: unknown
  /** A turn's payload (see `checkpointPayload`). */
  readonly checkpoint: unknown
  readonly applied: AppliedPick
  readonly error: TaskError
  readonly retry: "fatal" | "retry" | "backoff"
  readonly delay: number
  readonly messages: ReadonlyArray<unknown>
  readonly items: ReadonlyArray<ItemPick>
  readonly children: ReadonlyArray<number>
  readonly n: number
  readonly idPick: IdPick
  readonly childPick: ChildPick
  readonly token: "right" | "wrong" | "none"
  readonly status: ChildEnd
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
    maxRetries: fc.integer({ min: 0, max: 3 }),
    parent: fc.option(fc.nat(4), { nil: undefined, freq: 3 }),
    batch: fc.option(fc.constant("b-1"), { nil: undefined, freq: 4 })
  }, { requiredKeys: ["op", "task", "agent", "owner", "payload", "maxRetries"] })

/** A wait item's timeout: often none, else due at once or within a few steps. */
const timeoutArb = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 3_000 }) }
)
const itemArb: fc.Arbitrary<ItemPick> = fc.record({
  kind: fc.oneof(
    { weight: 10, arbitrary: fc.constant("result" as const) },
    { weight: 10, arbitrary: fc.constant("child" as const) },
    { weight: 1, arbitrary: fc.constant("childAsResult" as const) },
    { weight: 1, arbitrary: fc.constant("unknownChild" as const) }
  ),
  n: fc.nat(5),
  timeout: timeoutArb,
  onTimeout: fc.constantFrom(undefined, "fail" as const, "resume" as const, "resume" as const, "resume" as const)
})
/** Mostly 1-2 items; sometimes none (an invalid wait). */
const itemsArb = fc.oneof(
  { weight: 20, arbitrary: fc.array(itemArb, { minLength: 1, maxLength: 2 }) },
  { weight: 1, arbitrary: fc.constant([]) }
)
const childrenArb = fc.array(fc.nat(3), { minLength: 1, maxLength: 3 })
const idPick: fc.Arbitrary<IdPick> = fc.oneof(
  { weight: 6, arbitrary: fc.constant("outstanding" as const) },
  { weight: 2, arbitrary: fc.constant("received" as const) },
  { weight: 1, arbitrary: fc.constant("any" as const) }
)
const childPick: fc.Arbitrary<ChildPick> = fc.oneof(
  { weight: 6, arbitrary: fc.constant("running" as const) },
  { weight: 2, arbitrary: fc.constant("reported" as const) },
  { weight: 1, arbitrary: fc.constant("unknown" as const) }
)
const tokenPick = fc.oneof(
  { weight: 5, arbitrary: fc.constant("right" as const) },
  { weight: 1, arbitrary: fc.constant("wrong" as const) },
  { weight: 3, arbitrary: fc.constant("none" as const) }
)
const childStatus = fc.constantFrom("completed" as const, "completed" as const, "failed" as const, "cancelled" as const, "expired" as const)

/** Steps over `tasks` task ids; weights favour the transitions that move a task along. */
export const stepArb = (tasks: number): fc.Arbitrary<Step> => {
  const task = fc.integer({ min: 0, max: tasks - 1 })
  const w = (weight: number, arbitrary: fc.Arbitrary<Step>) => ({ weight, arbitrary })
  return fc.oneof(
    w(2, enqueueArb(task)),
    w(5, fc.record({ op: fc.constant("Claim" as const), task, worker: fc.nat(workers.length - 1), lease: leasePick })),
    w(1, fc.record({ op: fc.constant("Heartbeat" as const), task, worker: fc.nat(workers.length - 1), lease: leasePick })),
    w(3, fc.record({ op: fc.constant("CompleteTurn" as const), task, lease: leasePick, payload: checkpointPayload, applied: appliedPick })),
    w(2, fc.record({
      op: fc.constant("Complete" as const),
      task,
      lease: leasePick,
      output: json,
      applied: appliedPick,
      payload: fc.option(checkpointPayload, { nil: undefined })
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
    w(2, fc.record({ op: fc.constant("Wait" as const), task, lease: leasePick, payload: checkpointPayload, applied: appliedPick, items: itemsArb })),
    w(1, fc.record({ op: fc.constant("Spawn" as const), task, lease: leasePick, children: childrenArb })),
    w(2, fc.record({ op: fc.constant("Deliver" as const), task, id: idPick, n: fc.nat(5), result: json, token: tokenPick })),
    w(2, fc.record({
      op: fc.constant("ChildFinished" as const),
      task,
      child: childPick,
      n: fc.nat(5),
      status: childStatus,
      output: json,
      error: taskError
    })),
    w(1, fc.record({ op: fc.constant("TimeoutWait" as const), task })),
    w(30, fc.record({ op: fc.constant("Auto" as const), task, pick: fc.nat(), params: autoParams }))
  )
}

const autoParams: fc.Arbitrary<AutoParams> = fc.record({
  worker: fc.nat(workers.length - 1),
  payload: json,
  checkpoint: checkpointPayload,
  applied: appliedPick,
  error: taskError,
  retry: fc.constantFrom("fatal" as const, "retry" as const, "retry" as const, "backoff" as const, "backoff" as const, "backoff" as const),
  delay: backoffDelay,
  messages: fc.array(json, { maxLength: 2 }),
  items: itemsArb,
  children: childrenArb,
  n: fc.nat(5),
  idPick,
  childPick,
  token: tokenPick,
  status: childStatus,
  wakeAt: fc.constantFrom("retryAt" as const, "justBefore" as const)
})

/** The commands that make sense for a status (repeated ones are likelier). */
const fitting = (state: State): ReadonlyArray<Step["op"]> => {
  switch (state?.status) {
    case undefined:
      return ["Enqueue"]
    case "queued":
      return ["Claim", "Claim", "Claim", "Claim", "Cancel", "Steer", "ChildFinished", "Deliver"]
    case "processing":
      if (state.cancelRequested) {
        return ["Cancel", "Heartbeat", "Steer", "CompleteTurn", "Complete", "Fail", "Release", "AcknowledgeCancel", "Recover", "Wait", "Spawn"]
      }
      return [
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
        "Steer",
        "Wait",
        "Wait",
        "Wait",
        "Wait",
        "Wait",
        "Wait",
        "Spawn",
        "Spawn",
        "Spawn",
        "ChildFinished",
        "ChildFinished"
      ]
    case "backoff":
      return ["WakeUp", "WakeUp", "WakeUp", "Cancel", "Steer", "ChildFinished"]
    case "waiting":
      return [
        "Deliver",
        "Deliver",
        "Deliver",
        "Deliver",
        "ChildFinished",
        "ChildFinished",
        "ChildFinished",
        "TimeoutWait",
        "TimeoutWait",
        "Cancel",
        "Steer",
        "WakeUp"
      ]
    case "expired":
      return ["Enqueue", "Cancel", "WakeUp", "Deliver"]
    default:
      return ["Expire", "Expire", "Cancel", "Steer", "Claim", "Deliver", "ChildFinished", "TimeoutWait"]
  }
}

/** The commands that keep a task in the waiting lifecycle (repeated ones are likelier). */
const fittingWaits = (state: State): ReadonlyArray<Step["op"]> => {
  switch (state?.status) {
    case undefined:
      return ["Enqueue"]
    case "expired":
      return ["Deliver", "ChildFinished"]
    case "queued":
      return ["Claim", "Claim", "Claim", "Claim", "ChildFinished", "Cancel"]
    case "processing":
      return [
        "Spawn",
        "Spawn",
        "Spawn",
        "ChildFinished",
        "ChildFinished",
        "Wait",
        "Wait",
        "Wait",
        "Wait",
        "Wait",
        "CompleteTurn",
        "Complete",
        "Fail",
        "Recover",
        "Cancel"
      ]
    case "waiting":
      return ["Deliver", "Deliver", "Deliver", "ChildFinished", "ChildFinished", "ChildFinished", "TimeoutWait", "TimeoutWait", "Cancel", "Steer"]
    case "backoff":
      return ["WakeUp", "WakeUp", "ChildFinished"]
    default:
      return ["Expire", "Deliver", "ChildFinished", "TimeoutWait"]
  }
}

/** The concrete step an `Auto` step stands for, given the task's state. */
const autoStep = (step: Extract<Step, { op: "Auto" }>, state: State): Step => {
  const ops = step.focus === "waits" ? fittingWaits(state) : fitting(state)
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
      return { op, task, lease, payload: p.checkpoint, applied: p.applied }
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
    case "Wait":
      return { op, task, lease, payload: p.checkpoint, applied: p.applied, items: p.items }
    case "Spawn":
      return { op, task, lease, children: p.children }
    case "Deliver":
      return { op, task, id: p.idPick, n: p.n, result: p.payload, token: p.token }
    case "ChildFinished":
      return { op, task, child: p.childPick, n: p.n, status: p.status, output: p.payload, error: p.error }
    case "TimeoutWait":
      return { op, task }
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

/**
 * Steps that live in the waiting lifecycle: one or two tasks, mostly `Auto` steps (a fitting command under the
 * current lease), so tasks spawn children, park, get results (early, late, twice), time out and are cancelled.
 */
export const waitStepsArb = (maxSteps: number): fc.Arbitrary<ReadonlyArray<TimedStep>> => {
  // Four task ids, some enqueued first (a task that is gone leaves room for another), and the scenarios' tasks.
  const task = fc.oneof(fc.nat(3), fc.integer({ min: 10, max: 10 + scenarios.length - 1 }))
  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      weight: 12,
      arbitrary: fc.record({ op: fc.constant("Auto" as const), task, pick: fc.nat(), params: autoParams, focus: fc.constant("waits" as const) })
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("Deliver" as const), task, id: idPick, n: fc.nat(5), result: json, token: tokenPick }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("ChildFinished" as const),
        task,
        child: childPick,
        n: fc.nat(5),
        status: childStatus,
        output: json,
        error: taskError
      })
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("TimeoutWait" as const), task }) }
  )
  const timed = (s: fc.Arbitrary<Step>) => fc.record({ dt: elapsed, step: s, pipelined: fc.constant(false) })
  const untimed = (steps: ReadonlyArray<Step>): ReadonlyArray<TimedStep> => steps.map((s) => ({ dt: 0, step: s, pipelined: false }))
  return fc
    .tuple(
      fc.array(timed(enqueueArb(task)), { minLength: 1, maxLength: 2 }),
      fc.shuffledSubarray([...scenarios], { minLength: 1 }),
      fc.array(timed(step), { maxLength: maxSteps, size: "max" }),
      fc.record({ payload: json, result: json, output: json, error: taskError })
    )
    .map(([enqueues, picked, steps, data]) => [
      ...enqueues,
      // Each scenario on its own fresh task (ids 10+), then the random steps over all of them.
      ...picked.flatMap((scenario, i) => untimed(scenario(10 + i, data))),
      ...steps
    ])
}

interface ScenarioData {
  readonly payload: unknown
  readonly result: unknown
  readonly output: unknown
  readonly error: TaskError
}
const item = (kind: ItemPick["kind"], n: number, timeout?: number, onTimeout?: "fail" | "resume"): ItemPick => ({
  kind,
  n,
  timeout,
  onTimeout
})
const enqueue = (task: number, d: ScenarioData): Step => ({ op: "Enqueue", task, agent: 0, owner: "u1", payload: d.payload, maxRetries: 1 })
const claim = (task: number): Step => ({ op: "Claim", task, worker: 0, lease: "current" })
const grow = (task: number, value: unknown): Step => ({ op: "CompleteTurn", task, lease: "current", payload: new Grow(value), applied: "all" })
const spawn = (task: number, children: ReadonlyArray<number>): Step => ({ op: "Spawn", task, lease: "current", children })
const wait = (task: number, d: ScenarioData, ...items: ReadonlyArray<ItemPick>): Step => ({
  op: "Wait",
  task,
  lease: "current",
  payload: d.payload,
  applied: "all",
  items
})
const childEnds = (task: number, d: ScenarioData, status: ChildEnd = "completed"): Step => ({
  op: "ChildFinished",
  task,
  child: "running",
  n: 0,
  status,
  output: d.output,
  error: d.error
})
const deliver = (task: number, d: ScenarioData, token: "right" | "none" = "right"): Step => ({
  op: "Deliver",
  task,
  id: "outstanding",
  n: 0,
  result: d.result,
  token
})
/** The races of waiting, as fixed step sequences on a fresh task (time passes only in `timeoutWaiting`). */
const scenarios: ReadonlyArray<(task: number, d: ScenarioData) => ReadonlyArray<Step>> = [
  // Both children end while their parent's turn still runs; the wait that names them resumes at once.
  (t, d) => [enqueue(t, d), claim(t), spawn(t, [0, 1]), childEnds(t, d), childEnds(t, d, "failed"), wait(t, d, item("child", 0))],
  // The last child's end resumes its waiting parent; a second report of it is rejected.
  (t, d) => [enqueue(t, d), claim(t), spawn(t, [2]), wait(t, d, item("child", 1)), childEnds(t, d, "cancelled"), {
    ...childEnds(t, d),
    child: "reported"
  }],
  // A result delivered before the task parked is rejected; after, it resumes the task; a second delivery is rejected.
  (t, d) => [enqueue(t, d), claim(t), deliver(t, d), wait(t, d, item("result", 0)), deliver(t, d), { ...deliver(t, d), id: "received" }],
  // One item times out (resume) while another is still outstanding: the task keeps waiting.
  (t, d) => [enqueue(t, d), claim(t), wait(t, d, item("result", 0, 0, "resume"), item("result", 1)), { op: "TimeoutWait", task: t }],
  // A timeout with onTimeout "fail" fails the task; its timed-out child is to be cancelled.
  (t, d) => [enqueue(t, d), claim(t), spawn(t, [3]), wait(t, d, item("child", 1, 0)), { op: "TimeoutWait", task: t }],
  // Cancel while waiting: cancelled at once.
  (t, d) => [enqueue(t, d), claim(t), spawn(t, [0]), wait(t, d, item("child", 1), item("result", 2)), { op: "Cancel", task: t }],
  // A conversation checkpointed as deltas (the second growth at the latest): claimed as a chain, waits with a
  // delta, resumes, and completes with one (ADR 0018).
  (t, d) => [
    enqueue(t, d),
    claim(t),
    grow(t, d.payload),
    claim(t),
    grow(t, d.result),
    claim(t),
    { ...wait(t, d, item("result", 0)), payload: new Grow(d.output) },
    deliver(t, d),
    claim(t),
    { op: "Complete", task: t, lease: "current", output: d.output, applied: "all", payload: new Grow(d.result) }
  ]
]

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

const pick = <A>(xs: ReadonlyArray<A>, n: number): A | undefined => xs.length === 0 ? undefined : xs[n % xs.length]

/** The concrete wait item for a pick, given the task's children. */
const waitItem = (p: ItemPick, state: State, now: number): WaitItem => {
  const children = Object.keys(state?.children ?? {})
  // Children a wait may name: reported with the result still unconsumed (for an even n: first), or running.
  const entries = Object.entries(state?.children ?? {})
  const reported = entries.filter(([id, c]) => c.end !== undefined && state?.results[id] !== undefined)
  const running = entries.filter(([, c]) => c.end === undefined)
  const valid = p.n % 2 === 0 ? [...reported, ...running].slice(0, 1) : [...running, ...reported]
  const timing = {
    ...(p.timeout !== undefined ? { timeoutAt: now + p.timeout } : {}),
    ...(p.onTimeout !== undefined ? { onTimeout: p.onTimeout } : {})
  }
  const child = p.kind === "child" ? pick(valid.map(([id]) => id), p.n) ?? pick(children, p.n) : undefined
  if (child !== undefined) return { id: child, kind: "child", ...timing }
  if (p.kind === "unknownChild") return { id: `kid-none-${p.n}`, kind: "child", ...timing }
  const id = p.kind === "childAsResult" ? pick(children, p.n) ?? `r${p.n % 3}` : `r${p.n % 3}`
  return { id, kind: "result", ...(p.n % 4 === 3 ? {} : { token: `tok-${p.n}` }), ...timing }
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
        ...(step.parent !== undefined ? { parentId: taskIdOf(step.parent) } : {}),
        ...(step.batch !== undefined ? { batchId: step.batch } : {}),
        now
      }
    case "Wait":
      return {
        _tag: "Wait",
        taskId,
        lease: resolveLease(step.lease, state),
        ...checkpointOf(step.payload, state, now),
        steeringApplied: resolveApplied(step.applied, state),
        pending: step.items.map((p) => waitItem(p, state, now)),
        now
      }
    case "Spawn":
      return {
        _tag: "SpawnChildren",
        taskId,
        lease: resolveLease(step.lease, state),
        children: step.children.map((n) => ({ id: `kid-${step.task}-${n}`, agent: agents[n % agents.length]! })),
        now
      }
    case "Deliver": {
      const items = (state?.wait ?? []).filter((i) => i.kind === "result")
      const open = outstanding(items, state?.results ?? {})
      const item = step.id === "outstanding"
        ? pick(open, step.n) ?? pick(items, step.n)
        : step.id === "received"
        ? pick(items.filter((i) => state?.results[i.id] !== undefined), step.n) ?? pick(items, step.n)
        : undefined
      const token = step.token === "none" ? undefined : step.token === "wrong" ? "wrong-token" : item?.token ?? `tok-${step.n}`
      return {
        _tag: "DeliverResult",
        taskId,
        id: item?.id ?? `r${step.n % 3}`,
        result: step.result,
        ...(token !== undefined ? { token } : {}),
        now
      }
    }
    case "ChildFinished": {
      const children = Object.entries(state?.children ?? {})
      // Running children the wait names come first (so waits resume), then any running child.
      const waitedFor = new Set(outstanding(state?.wait ?? [], state?.results ?? {}).map((i) => i.id))
      const running = children.filter(([, c]) => c.end === undefined)
      const child = step.child === "running"
        ? pick(running.filter(([id]) => waitedFor.has(id)), step.n) ?? pick(running, step.n) ?? pick(children, step.n)
        : step.child === "reported"
        ? pick(children.filter(([, c]) => c.end !== undefined), step.n) ?? pick(children, step.n)
        : undefined
      return {
        _tag: "ChildFinished",
        taskId,
        childId: child?.[0] ?? `kid-unknown-${step.n}`,
        status: step.status,
        ...(step.status === "completed" ? { output: step.output } : {}),
        ...(step.status === "failed" ? { error: step.error } : {}),
        now
      }
    }
    case "TimeoutWait":
      return { _tag: "TimeoutWait", taskId, now }
    case "Claim":
    case "Heartbeat":
      return { _tag: step.op, taskId, lease: resolveLease(step.lease, state), worker: workers[step.worker]!, now }
    case "CompleteTurn":
      return {
        _tag: "CompleteTurn",
        taskId,
        lease: resolveLease(step.lease, state),
        ...checkpointOf(step.payload, state, now),
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
        ...(step.payload !== undefined ? checkpointOf(step.payload, state, now) : {}),
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
