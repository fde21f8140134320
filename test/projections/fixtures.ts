/**
 * Shared test fixtures for the metrics projection: arbitrary event sequences (any order of any events,
 * valid for the state machine or not: the fold must take whatever the log holds) and a canonical form
 * of a projection state for deep comparison.
 */
import fc from "fast-check"
import type { Envelope, TaskEvent } from "../../streams/TaskEvent.ts"
import type { MetricsState } from "../../projections/MetricsBuckets.ts"

export const eventArb: fc.Arbitrary<TaskEvent> = fc.oneof(
  { weight: 3, arbitrary: fc.constant<TaskEvent>({ _tag: "TaskEnqueued", payload: null, maxRetries: 2 }) },
  { weight: 4, arbitrary: fc.constant<TaskEvent>({ _tag: "TaskClaimed", lease: 1, worker: "w1" }) },
  { weight: 2, arbitrary: fc.constant<TaskEvent>({ _tag: "TaskHeartbeat", lease: 1, worker: "w1" }) },
  fc.constant<TaskEvent>({ _tag: "TaskSteered", messages: ["hi"] }),
  { weight: 2, arbitrary: fc.constant<TaskEvent>({ _tag: "TurnCompleted", lease: 1, turn: 1, payload: null, steeringApplied: 0 }) },
  { weight: 2, arbitrary: fc.constant<TaskEvent>({ _tag: "TaskCompleted", lease: 1, output: "ok", steeringApplied: 0, steeringUnapplied: 0 }) },
  { weight: 2, arbitrary: fc.constantFrom("retry", "backoff", "failed").map((decision): TaskEvent => ({
    _tag: "TaskFailed",
    lease: 1,
    error: { message: "boom", kind: "other" },
    decision,
    retries: 1,
    ...(decision === "backoff" ? { retryAt: 1 } : {})
  })) },
  fc.constant<TaskEvent>({ _tag: "TaskCancelRequested" }),
  fc.option(fc.constant(1), { nil: undefined }).map((lease): TaskEvent =>
    lease === undefined ? { _tag: "TaskCancelled" } : { _tag: "TaskCancelled", lease }
  ),
  fc.constant<TaskEvent>({ _tag: "TaskReleased", lease: 1 }),
  fc.constantFrom("requeued", "failed").map((decision): TaskEvent => ({ _tag: "TaskRecovered", lease: 1, decision, retries: 1 })),
  fc.constant<TaskEvent>({ _tag: "TaskBackoffElapsed" }),
  fc.constant<TaskEvent>({ _tag: "TaskExpired" }),
  fc.boolean().map((resumed): TaskEvent => ({
    _tag: "TaskWaiting", lease: 1, turn: 1, payload: null, steeringApplied: 0, pending: [{ id: "r1", kind: "result" }], resumed
  })),
  fc.boolean().map((resumed): TaskEvent => ({ _tag: "ToolResultReceived", id: "r1", result: 1, resumed })),
  fc.boolean().map((resumed): TaskEvent => ({ _tag: "ChildTaskFinished", childId: "c1", agent: "alpha", status: "completed", resumed })),
  fc.constant<TaskEvent>({ _tag: "ChildTasksSpawned", lease: 1, children: [{ id: "c1", agent: "alpha" }] }),
  fc.constantFrom("failed", "resumed", "waiting").map((decision): TaskEvent => ({ _tag: "TaskWaitTimedOut", ids: ["r1"], decision }))
)

export const TASK_IDS = ["task-a", "task-b", "task-c", "task-d", "task-e"] as const
export const AGENTS = ["alpha", "beta"] as const
export const BASE_AT = 1_700_000_000_000

/** A log: events of a few tasks interleaved, times non-decreasing (steps up to ~3 minutes). */
export const logArb = (maxLength = 60, minLength = 0): fc.Arbitrary<Array<Envelope>> =>
  fc.array(
    fc.record({ task: fc.nat(TASK_IDS.length - 1), event: eventArb, dt: fc.oneof(fc.nat(4), fc.nat(2_000), fc.nat(200_000)) }),
    { minLength, maxLength, size: "max" }
  ).map((items) => {
    let at = BASE_AT
    return items.map(({ task, event, dt }, i): Envelope => {
      at += dt
      return {
        id: `${at}-${i}`,
        version: i + 1,
        at,
        taskId: TASK_IDS[task]!,
        agent: AGENTS[task % AGENTS.length]!,
        ownerId: "owner",
        event
      }
    })
  })

/** Cuts an array at the given (sorted, deduplicated) positions. */
export const chunk = <A>(xs: ReadonlyArray<A>, cuts: ReadonlyArray<number>): Array<Array<A>> => {
  const points = [...new Set(cuts.map((c) => c % (xs.length + 1)))].sort((a, b) => a - b)
  const out: Array<Array<A>> = []
  let from = 0
  for (const p of [...points, xs.length]) {
    out.push(xs.slice(from, p))
    from = p
  }
  return out
}

/** A canonical, order-free form of a state (zero fields dropped), for deepStrictEqual. */
export const canon = (state: MetricsState) => ({
  buckets: [...state.buckets]
    .map(([id, b]) => [id, Object.entries(b).filter(([, n]) => n !== 0).sort(([a], [c]) => a < c ? -1 : 1)] as const)
    .filter(([, fields]) => fields.length > 0)
    .sort(([a], [b]) => a < b ? -1 : 1),
  open: [...state.open].map(([id, t]) => [id, t.queuedAt ?? null, t.claimedAt ?? null] as const).sort(([a], [b]) =>
    a < b ? -1 : 1
  )
})
