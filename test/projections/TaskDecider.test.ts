/**
 * The task decider, command by command: given a history, when a command, then these events (or this
 * rejection). Covers every command in every status and the edge cases of ARCHITECTURE.md §3, then
 * checks the invariants with fast-check over random command sequences: terminal states absorb, retries
 * stay within maxRetries, the lease only grows, a stale lease changes nothing, every reachable state is
 * valid, and the version counts the events of the history (heartbeats excluded).
 */
import fc from "fast-check"
import { assert, describe, it } from "vitest"
import type { Rejection, State, TaskCommand, TaskState } from "../../projections/TaskDecider.ts"
import { decide, fold, outstanding } from "../../projections/TaskDecider.ts"
import type { TaskEvent, TaskStatus, WaitItem } from "../../streams/TaskEvent.ts"
import { isTerminal, TaskStatus as TaskStatusSchema } from "../../streams/TaskEvent.ts"
import { applyCommand, isHistoryEvent, runModel, T0, timedStepsArb, waitStepsArb } from "../support/TaskSteps.ts"

// ---------------------------------------------------------------------------------------------------
// given / when / then

const NOW = T0 + 1_000
const id = "t1"
const history = (events: ReadonlyArray<TaskEvent>) =>
  events.map((event, i) => ({ at: T0 + i, taskId: id, agent: "alpha", ownerId: "owner", event }))

const given = (...events: ReadonlyArray<TaskEvent>) => {
  const state = fold(history(events))
  return {
    state,
    when: (command: TaskCommand) => {
      const decision = decide(command, state)
      return {
        then: (...expected: ReadonlyArray<TaskEvent>) =>
          assert.deepStrictEqual(decision, { _tag: "Accepted", events: expected }),
        rejects: (rejection: Rejection) => assert.deepStrictEqual(decision, { _tag: "Rejected", rejection }),
        /** The state after the command's events. */
        state: (): State => applyCommand(command, state).state
      }
    }
  }
}

const cmd = {
  enqueue: (maxRetries = 2): TaskCommand => ({
    _tag: "Enqueue",
    taskId: id,
    agent: "alpha",
    ownerId: "owner",
    payload: { q: 1 },
    maxRetries,
    now: NOW
  }),
  claim: (lease: number, worker = "w1"): TaskCommand => ({ _tag: "Claim", taskId: id, lease, worker, now: NOW }),
  heartbeat: (lease: number): TaskCommand => ({ _tag: "Heartbeat", taskId: id, lease, worker: "w1", now: NOW }),
  turn: (lease: number, steeringApplied = 0): TaskCommand => ({
    _tag: "CompleteTurn",
    taskId: id,
    lease,
    payload: { ctx: lease },
    steeringApplied,
    now: NOW
  }),
  complete: (lease: number, steeringApplied = 0): TaskCommand => ({
    _tag: "Complete",
    taskId: id,
    lease,
    output: "done",
    steeringApplied,
    now: NOW
  }),
  fail: (lease: number, retry: "fatal" | "retry" | "backoff", message = "boom"): TaskCommand => ({
    _tag: "Fail",
    taskId: id,
    lease,
    error: { message, kind: retry },
    retry,
    retryAt: NOW + 500,
    now: NOW
  }),
  ackCancel: (lease: number): TaskCommand => ({ _tag: "AcknowledgeCancel", taskId: id, lease, now: NOW }),
  release: (lease: number): TaskCommand => ({ _tag: "Release", taskId: id, lease, now: NOW }),
  cancel: (): TaskCommand => ({ _tag: "Cancel", taskId: id, now: NOW }),
  steer: (...messages: ReadonlyArray<unknown>): TaskCommand => ({ _tag: "Steer", taskId: id, messages, now: NOW }),
  recover: (lease: number): TaskCommand => ({ _tag: "Recover", taskId: id, lease, now: NOW }),
  wake: (now = NOW): TaskCommand => ({ _tag: "WakeUp", taskId: id, now }),
  expire: (): TaskCommand => ({ _tag: "Expire", taskId: id, now: NOW }),
  wait: (lease: number, ...pending: ReadonlyArray<WaitItem>): TaskCommand => ({
    _tag: "Wait",
    taskId: id,
    lease,
    payload: { parked: lease },
    steeringApplied: 0,
    pending,
    now: NOW
  }),
  spawn: (lease: number, ...children: ReadonlyArray<string>): TaskCommand => ({
    _tag: "SpawnChildren",
    taskId: id,
    lease,
    children: children.map((c) => ({ id: c, agent: "beta" })),
    now: NOW
  }),
  deliver: (resultId: string, result: unknown, token?: string): TaskCommand => ({
    _tag: "DeliverResult",
    taskId: id,
    id: resultId,
    result,
    ...(token !== undefined ? { token } : {}),
    now: NOW
  }),
  childDone: (childId: string, output: unknown = "out"): TaskCommand => ({
    _tag: "ChildFinished",
    taskId: id,
    childId,
    status: "completed",
    output,
    now: NOW
  }),
  timeout: (now = NOW): TaskCommand => ({ _tag: "TimeoutWait", taskId: id, now })
}

/** Every command that names a lease (the worker's commands, and Recover with the lease of the claim). */
const leasedCommands = (lease: number): ReadonlyArray<TaskCommand> => [
  cmd.heartbeat(lease),
  cmd.turn(lease),
  cmd.complete(lease),
  cmd.fail(lease, "retry"),
  cmd.ackCancel(lease),
  cmd.release(lease),
  cmd.recover(lease)
]
const allCommands = (lease: number): ReadonlyArray<TaskCommand> => [
  cmd.enqueue(),
  cmd.claim(lease),
  ...leasedCommands(lease),
  cmd.cancel(),
  cmd.steer("hi"),
  cmd.wake(),
  cmd.expire()
]

// Histories
const enqueued: ReadonlyArray<TaskEvent> = [{ _tag: "TaskEnqueued", payload: { q: 1 }, maxRetries: 2 }]
const claimed: ReadonlyArray<TaskEvent> = [...enqueued, { _tag: "TaskClaimed", lease: 1, worker: "w1" }]
const cancelRequested: ReadonlyArray<TaskEvent> = [...claimed, { _tag: "TaskCancelRequested" }]
const released: ReadonlyArray<TaskEvent> = [...claimed, { _tag: "TaskReleased", lease: 1 }]
const inBackoff: ReadonlyArray<TaskEvent> = [
  ...claimed,
  { _tag: "TaskFailed", lease: 1, error: { message: "429", kind: "rate_limit" }, decision: "backoff", retries: 1, retryAt: NOW }
]
const completed: ReadonlyArray<TaskEvent> = [
  ...claimed,
  { _tag: "TaskCompleted", lease: 1, output: "done", steeringApplied: 0, steeringUnapplied: 0 }
]
const failed: ReadonlyArray<TaskEvent> = [
  ...claimed,
  { _tag: "TaskFailed", lease: 1, error: { message: "bad", kind: "fatal" }, decision: "failed", retries: 0 }
]
const cancelled: ReadonlyArray<TaskEvent> = [...enqueued, { _tag: "TaskCancelled" }]
const expired: ReadonlyArray<TaskEvent> = [...completed, { _tag: "TaskExpired", lease: 1 }]
const approval: WaitItem = { id: "approve", kind: "result", token: "tok", timeoutAt: NOW + 1_000 }
const spawned: ReadonlyArray<TaskEvent> = [
  ...claimed,
  { _tag: "ChildTasksSpawned", lease: 1, children: [{ id: "c1", agent: "beta" }, { id: "c2", agent: "beta" }] }
]
const parkedFor = (...pending: ReadonlyArray<WaitItem>): TaskEvent => ({
  _tag: "TaskWaiting",
  lease: 1,
  turn: 1,
  payload: { parked: 1 },
  steeringApplied: 0,
  pending,
  resumed: false
})
const waitingForApproval: ReadonlyArray<TaskEvent> = [...claimed, { ...parkedFor(approval), deadline: NOW + 1_000 } as TaskEvent]
const waitingForChildren: ReadonlyArray<TaskEvent> = [...spawned, parkedFor({ id: "c1", kind: "child" }, { id: "c2", kind: "child" })]

describe("TaskDecider", () => {
  describe("when the task does not exist", () => {
    it("enqueue creates it, queued under lease 0", () => {
      const w = given().when(cmd.enqueue(3))
      w.then({ _tag: "TaskEnqueued", payload: { q: 1 }, maxRetries: 3 })
      const s = w.state()!
      assert.strictEqual(s.status, "queued")
      assert.strictEqual(s.lease, 0)
      assert.strictEqual(s.version, 1)
      assert.strictEqual(s.createdAt, NOW)
    })
    it("rejects every other command with TaskNotFound", () => {
      for (const command of allCommands(0).slice(1)) given().when(command).rejects({ _tag: "TaskNotFound" })
    })
  })

  describe("when queued", () => {
    it("rejects a second enqueue", () => given(...enqueued).when(cmd.enqueue()).rejects({ _tag: "TaskAlreadyExists" }))
    it("claim under the queue entry's lease starts lease + 1", () => {
      const w = given(...enqueued).when(cmd.claim(0, "w2"))
      w.then({ _tag: "TaskClaimed", lease: 1, worker: "w2" })
      assert.include(w.state(), { status: "processing", lease: 1, worker: "w2" })
    })
    it("rejects the claim of a stale queue entry (an older lease)", () =>
      given(...released).when(cmd.claim(0)).rejects({ _tag: "StaleLease", currentLease: 1, status: "queued" }))
    it("rejects every worker command: nothing runs", () => {
      for (const command of leasedCommands(0)) {
        given(...enqueued).when(command).rejects({ _tag: "StaleLease", currentLease: 0, status: "queued" })
      }
    })
    it("cancel cancels at once", () => {
      const w = given(...enqueued, { _tag: "TaskSteered", messages: ["m"] }).when(cmd.cancel())
      w.then({ _tag: "TaskCancelled" })
      assert.include(w.state(), { status: "cancelled", cancelRequested: false })
      assert.deepStrictEqual(w.state()!.steering, [])
    })
    it("steer keeps the messages for the first turn", () => {
      const w = given(...enqueued).when(cmd.steer("a", { b: 1 }))
      w.then({ _tag: "TaskSteered", messages: ["a", { b: 1 }] })
      assert.deepStrictEqual(w.state()!.steering, ["a", { b: 1 }])
    })
    it("wake-up and expire have nothing to do", () => {
      given(...enqueued).when(cmd.wake()).rejects({ _tag: "NotDue", status: "queued" })
      given(...enqueued).when(cmd.expire()).rejects({ _tag: "NotDue", status: "queued" })
    })
  })

  describe("when processing", () => {
    it("a heartbeat under the live lease is accepted with no event and changes no state", () => {
      const w = given(...claimed).when(cmd.heartbeat(1))
      w.then()
      assert.deepStrictEqual(w.state(), given(...claimed).state)
      given(...claimed).when(cmd.heartbeat(2)).rejects({ _tag: "StaleLease", currentLease: 1, status: "processing" })
    })
    it("a turn checkpoints the payload and requeues under the same lease", () => {
      const w = given(...claimed).when(cmd.turn(1))
      w.then({ _tag: "TurnCompleted", lease: 1, turn: 1, payload: { ctx: 1 }, steeringApplied: 0 })
      assert.deepInclude(w.state(), { status: "queued", lease: 1, turns: 1, payload: { ctx: 1 } })
      assert.isUndefined(w.state()!.worker)
    })
    it("a turn removes exactly the steering messages it applied", () => {
      const w = given(...claimed, { _tag: "TaskSteered", messages: ["a", "b", "c"] }).when(cmd.turn(1, 2))
      w.then({ _tag: "TurnCompleted", lease: 1, turn: 1, payload: { ctx: 1 }, steeringApplied: 2 })
      assert.deepStrictEqual(w.state()!.steering, ["c"])
    })
    it("rejects a steering count that is negative, too large or not whole", () => {
      const g = given(...claimed, { _tag: "TaskSteered", messages: ["a"] })
      for (const n of [-1, 2, 0.5, Number.NaN]) {
        g.when(cmd.turn(1, n)).rejects({ _tag: "InvalidSteeringCount", pending: 1 })
        g.when(cmd.complete(1, n)).rejects({ _tag: "InvalidSteeringCount", pending: 1 })
      }
    })
    it("complete reports the steering that arrived during the final turn as unapplied", () => {
      const w = given(...claimed, { _tag: "TaskSteered", messages: ["a", "b"] }).when(cmd.complete(1, 1))
      w.then({ _tag: "TaskCompleted", lease: 1, output: "done", steeringApplied: 1, steeringUnapplied: 1 })
      assert.deepInclude(w.state(), { status: "completed", output: "done", steering: [] })
    })
    it("a retryable failure requeues now and counts a retry", () => {
      const w = given(...claimed).when(cmd.fail(1, "retry"))
      w.then({ _tag: "TaskFailed", lease: 1, error: { message: "boom", kind: "retry" }, decision: "retry", retries: 1 })
      assert.deepInclude(w.state(), { status: "queued", retries: 1, error: { message: "boom", kind: "retry" } })
    })
    it("a backoff failure waits until retryAt", () => {
      const w = given(...claimed).when(cmd.fail(1, "backoff"))
      w.then({
        _tag: "TaskFailed",
        lease: 1,
        error: { message: "boom", kind: "backoff" },
        decision: "backoff",
        retries: 1,
        retryAt: NOW + 500
      })
      assert.include(w.state(), { status: "backoff", retryAt: NOW + 500 })
    })
    it("a fatal failure fails at once, whatever retries are left", () => {
      const w = given(...claimed).when(cmd.fail(1, "fatal"))
      w.then({ _tag: "TaskFailed", lease: 1, error: { message: "boom", kind: "fatal" }, decision: "failed", retries: 0 })
      assert.include(w.state(), { status: "failed", retries: 0 })
    })
    it("release requeues under the same lease without counting a retry", () => {
      const w = given(...claimed).when(cmd.release(1))
      w.then({ _tag: "TaskReleased", lease: 1 })
      assert.include(w.state(), { status: "queued", lease: 1, retries: 0 })
    })
    it("acknowledging a cancel that was not requested has nothing to do", () =>
      given(...claimed).when(cmd.ackCancel(1)).rejects({ _tag: "NotDue", status: "processing" }))
    it("cancel is requested of the running worker", () => {
      const w = given(...claimed).when(cmd.cancel())
      w.then({ _tag: "TaskCancelRequested" })
      assert.include(w.state(), { status: "processing", cancelRequested: true })
    })
    it("steer adds messages for the next turn", () =>
      given(...claimed).when(cmd.steer("x")).then({ _tag: "TaskSteered", messages: ["x"] }))
    it("recover requeues with one more retry", () => {
      const w = given(...claimed).when(cmd.recover(1))
      w.then({ _tag: "TaskRecovered", lease: 1, decision: "requeued", retries: 1 })
      assert.include(w.state(), { status: "queued", retries: 1, lease: 1 })
    })
    it("recover fails the task when retries are exhausted", () => {
      const w = given({ _tag: "TaskEnqueued", payload: 1, maxRetries: 0 }, { _tag: "TaskClaimed", lease: 1, worker: "w" })
        .when(cmd.recover(1))
      w.then({ _tag: "TaskRecovered", lease: 1, decision: "failed", retries: 0 })
      assert.deepInclude(w.state(), { status: "failed", error: { message: "worker lost its lease", kind: "recovered" } })
    })
    it("rejects every command under a stale lease, and a claim", () => {
      for (const lease of [0, 2]) {
        for (const command of [cmd.claim(lease), ...leasedCommands(lease)]) {
          given(...claimed).when(command).rejects({ _tag: "StaleLease", currentLease: 1, status: "processing" })
        }
      }
      given(...claimed).when(cmd.claim(1)).rejects({ _tag: "StaleLease", currentLease: 1, status: "processing" })
    })
  })

  describe("when a cancel was requested", () => {
    it("the worker's next commit, or recovery, ends the task cancelled", () => {
      for (const command of [cmd.turn(1), cmd.complete(1), cmd.fail(1, "retry"), cmd.ackCancel(1), cmd.release(1), cmd.recover(1)]) {
        const w = given(...cancelRequested).when(command)
        w.then({ _tag: "TaskCancelled", lease: 1 })
        assert.include(w.state(), { status: "cancelled", cancelRequested: true })
      }
    })
    it("even with an invalid steering count or exhausted retries, the cancel wins", () => {
      given(...cancelRequested).when(cmd.turn(1, 5)).then({ _tag: "TaskCancelled", lease: 1 })
      given({ _tag: "TaskEnqueued", payload: 1, maxRetries: 0 }, { _tag: "TaskClaimed", lease: 1, worker: "w" }, {
        _tag: "TaskCancelRequested"
      }).when(cmd.fail(1, "fatal")).then({ _tag: "TaskCancelled", lease: 1 })
    })
    it("heartbeats and steering are still accepted; a second cancel changes nothing", () => {
      given(...cancelRequested).when(cmd.heartbeat(1)).then()
      given(...cancelRequested).when(cmd.steer(1)).then({ _tag: "TaskSteered", messages: [1] })
      given(...cancelRequested).when(cmd.cancel()).then()
    })
    it("a stale lease still changes nothing", () =>
      given(...cancelRequested).when(cmd.turn(0)).rejects({ _tag: "StaleLease", currentLease: 1, status: "processing" }))
  })

  describe("when in backoff", () => {
    it("wake-up is not due before retryAt", () =>
      given(...inBackoff).when(cmd.wake(NOW - 1)).rejects({ _tag: "NotDue", status: "backoff" }))
    it("wake-up at retryAt requeues", () => {
      const w = given(...inBackoff).when(cmd.wake(NOW))
      w.then({ _tag: "TaskBackoffElapsed" })
      assert.include(w.state(), { status: "queued", lease: 1 })
      assert.isUndefined(w.state()!.retryAt)
    })
    it("rejects a claim and worker commands", () => {
      given(...inBackoff).when(cmd.claim(1)).rejects({ _tag: "StaleLease", currentLease: 1, status: "backoff" })
      given(...inBackoff).when(cmd.turn(1)).rejects({ _tag: "StaleLease", currentLease: 1, status: "backoff" })
    })
    it("cancel cancels at once and drops the retry time", () => {
      const w = given(...inBackoff).when(cmd.cancel())
      w.then({ _tag: "TaskCancelled" })
      assert.isUndefined(w.state()!.retryAt)
    })
    it("steer is accepted", () => given(...inBackoff).when(cmd.steer("s")).then({ _tag: "TaskSteered", messages: ["s"] }))
  })

  describe("when finished", () => {
    const finished: ReadonlyArray<[TaskStatus, ReadonlyArray<TaskEvent>]> = [
      ["completed", completed],
      ["failed", failed],
      ["cancelled", cancelled]
    ]
    it("cancel of a cancelled task changes nothing; of a completed or failed one is a clear error", () => {
      given(...cancelled).when(cmd.cancel()).then()
      given(...completed).when(cmd.cancel()).rejects({ _tag: "TaskAlreadyFinished", status: "completed" })
      given(...failed).when(cmd.cancel()).rejects({ _tag: "TaskAlreadyFinished", status: "failed" })
    })
    it("steer is a clear error", () => {
      for (const [status, events] of finished) {
        given(...events).when(cmd.steer("late")).rejects({ _tag: "TaskAlreadyFinished", status })
      }
    })
    it("every worker command and claim is stale", () => {
      for (const [status, events] of finished) {
        const lease = given(...events).state!.lease
        for (const command of [cmd.claim(lease), ...leasedCommands(lease)]) {
          given(...events).when(command).rejects({ _tag: "StaleLease", currentLease: lease, status })
        }
      }
    })
    it("expire deletes the hot data and records TaskExpired with the last lease", () => {
      for (const [, events] of finished) {
        const before = given(...events).state!
        const w = given(...events).when(cmd.expire())
        w.then({ _tag: "TaskExpired", lease: before.lease })
        assert.deepInclude(w.state(), { status: "expired", payload: null, steering: [] })
        assert.notProperty(w.state(), "output")
      }
    })
  })

  it("expires only a finished task", () => {
    const unfinished: ReadonlyArray<[TaskStatus, ReadonlyArray<TaskEvent>]> = [
      ["queued", enqueued],
      ["processing", claimed],
      ["processing", cancelRequested],
      ["backoff", inBackoff]
    ]
    for (const [status, events] of unfinished) given(...events).when(cmd.expire()).rejects({ _tag: "NotDue", status })
  })

  describe("when expired", () => {
    it("every command is rejected: the task cannot be re-created, steered, cancelled or expired again", () => {
      const g = given(...expired)
      g.when(cmd.enqueue()).rejects({ _tag: "TaskAlreadyExists" })
      g.when(cmd.cancel()).rejects({ _tag: "TaskAlreadyFinished", status: "expired" })
      g.when(cmd.steer("x")).rejects({ _tag: "TaskAlreadyFinished", status: "expired" })
      g.when(cmd.expire()).rejects({ _tag: "NotDue", status: "expired" })
      g.when(cmd.wake()).rejects({ _tag: "NotDue", status: "expired" })
      for (const command of [cmd.claim(1), ...leasedCommands(1)]) {
        g.when(command).rejects({ _tag: "StaleLease", currentLease: 1, status: "expired" })
      }
    })
  })

  describe("waiting for deferred results", () => {
    it("a turn that waits checkpoints its payload and parks with the deadline of its items", () => {
      const w = given(...claimed).when(cmd.wait(1, approval, { id: "r2", kind: "result" }))
      w.then({
        _tag: "TaskWaiting",
        lease: 1,
        turn: 1,
        payload: { parked: 1 },
        steeringApplied: 0,
        pending: [approval, { id: "r2", kind: "result" }],
        deadline: NOW + 1_000,
        resumed: false
      })
      assert.deepInclude(w.state(), { status: "waiting", turns: 1, payload: { parked: 1 }, deadline: NOW + 1_000 })
      assert.isUndefined(w.state()!.worker)
    })
    it("rejects a wait for nothing, an id twice, or a result named like a child", () => {
      given(...claimed).when(cmd.wait(1)).rejects({ _tag: "InvalidWait", id: "", reason: "empty" })
      given(...claimed).when(cmd.wait(1, approval, approval)).rejects({ _tag: "InvalidWait", id: "approve", reason: "duplicate" })
      given(...spawned).when(cmd.wait(1, { id: "c1", kind: "result" })).rejects({ _tag: "InvalidWait", id: "c1", reason: "isAChild" })
      given(...claimed).when(cmd.wait(1, { id: "x", kind: "child" })).rejects({ _tag: "InvalidWait", id: "x", reason: "notAChild" })
    })
    it("a result is delivered once: the last one resumes the task, a second delivery is rejected", () => {
      const g = given(...waitingForApproval)
      g.when(cmd.deliver("approve", { ok: true }, "tok")).then({ _tag: "ToolResultReceived", id: "approve", result: { ok: true }, resumed: true })
      const after = g.when(cmd.deliver("approve", { ok: true })).state()!
      assert.deepInclude(after, { status: "queued", results: { approve: { kind: "result", result: { ok: true } } } })
      assert.isUndefined(after.deadline)
      given(...waitingForApproval, { _tag: "ToolResultReceived", id: "approve", result: 1, resumed: true })
        .when(cmd.deliver("approve", 2)).rejects({ _tag: "ResultAlreadyReceived", id: "approve" })
    })
    it("a wrong token, an unknown id, or a task not (yet) waiting is a clear rejection", () => {
      given(...waitingForApproval).when(cmd.deliver("approve", 1, "nope")).rejects({ _tag: "InvalidResultToken", id: "approve" })
      given(...waitingForApproval).when(cmd.deliver("other", 1)).rejects({ _tag: "ResultNotPending", id: "other", status: "waiting" })
      given(...claimed).when(cmd.deliver("approve", 1)).rejects({ _tag: "ResultNotPending", id: "approve", status: "processing" })
      given(...completed).when(cmd.deliver("approve", 1)).rejects({ _tag: "TaskAlreadyFinished", status: "completed" })
    })
    it("the next turn's commit consumes the results; the same id can be waited for again", () => {
      const resumed = [...waitingForApproval, { _tag: "ToolResultReceived", id: "approve", result: 1, resumed: true } as const]
      const claimedAgain = [...resumed, { _tag: "TaskClaimed", lease: 2, worker: "w1" } as const]
      const w = given(...claimedAgain).when(cmd.wait(2, approval))
      assert.deepInclude(w.state(), { status: "waiting", results: {} })
      assert.deepStrictEqual(given(...claimedAgain).when(cmd.turn(2)).state()!.results, {})
    })
    it("a failed attempt keeps the results for the retry", () => {
      const resumed = [...waitingForApproval, { _tag: "ToolResultReceived", id: "approve", result: 1, resumed: true } as const]
      const w = given(...resumed, { _tag: "TaskClaimed", lease: 2, worker: "w1" }).when(cmd.fail(2, "retry"))
      assert.deepInclude(w.state(), { status: "queued", results: { approve: { kind: "result", result: 1 } } })
    })
    it("cancel while waiting cancels at once and drops the wait", () => {
      const w = given(...waitingForApproval).when(cmd.cancel())
      w.then({ _tag: "TaskCancelled" })
      assert.deepInclude(w.state(), { status: "cancelled", wait: [], results: {} })
      assert.isUndefined(w.state()!.deadline)
    })
    it("steering while waiting waits for the next turn", () =>
      given(...waitingForApproval).when(cmd.steer("hurry")).then({ _tag: "TaskSteered", messages: ["hurry"] }))
  })

  describe("timeouts", () => {
    it("nothing is due before the deadline, or when not waiting", () => {
      given(...waitingForApproval).when(cmd.timeout(NOW + 999)).rejects({ _tag: "NotDue", status: "waiting" })
      given(...claimed).when(cmd.timeout(NOW + 5_000)).rejects({ _tag: "NotDue", status: "processing" })
    })
    it("onTimeout fail (the default) fails the task", () => {
      const w = given(...waitingForApproval).when(cmd.timeout(NOW + 1_000))
      w.then({ _tag: "TaskWaitTimedOut", ids: ["approve"], decision: "failed" })
      assert.deepInclude(w.state(), { status: "failed", error: { message: "timed out waiting for approve", kind: "wait_timeout" } })
    })
    it("onTimeout resume gives a timeout result, and resumes once nothing else is outstanding", () => {
      const soft: WaitItem = { id: "soft", kind: "result", timeoutAt: NOW, onTimeout: "resume" }
      const later: WaitItem = { id: "later", kind: "result", timeoutAt: NOW + 5_000, onTimeout: "resume" }
      const g = given(...claimed, { ...parkedFor(soft, later), deadline: NOW } as TaskEvent)
      const w = g.when(cmd.timeout(NOW))
      w.then({ _tag: "TaskWaitTimedOut", ids: ["soft"], decision: "waiting" })
      assert.deepInclude(w.state(), { status: "waiting", deadline: NOW + 5_000, results: { soft: { kind: "result", timedOut: true } } })
      given(...claimed, { ...parkedFor(soft), deadline: NOW } as TaskEvent).when(cmd.timeout(NOW))
        .then({ _tag: "TaskWaitTimedOut", ids: ["soft"], decision: "resumed" })
    })
  })

  describe("child tasks", () => {
    it("spawning registers children once (a retried turn spawns the same ids: no event)", () => {
      given(...claimed).when(cmd.spawn(1, "c1", "c1", "c2")).then({
        _tag: "ChildTasksSpawned",
        lease: 1,
        children: [{ id: "c1", agent: "beta" }, { id: "c2", agent: "beta" }]
      })
      given(...spawned).when(cmd.spawn(1, "c1", "c2")).then()
      given(...spawned).when(cmd.spawn(0, "c3")).rejects({ _tag: "StaleLease", currentLease: 1, status: "processing" })
    })
    it("a child that ends before its parent parked leaves its result; the wait naming it resumes at once", () => {
      const early = [...spawned, { _tag: "ChildTaskFinished", childId: "c1", agent: "beta", status: "completed", output: 7, resumed: false } as const]
      given(...spawned).when(cmd.childDone("c1", 7)).then(early.at(-1)!)
      const w = given(...early).when(cmd.wait(1, { id: "c1", kind: "child" }))
      w.then({ ...parkedFor({ id: "c1", kind: "child" }), resumed: true } as TaskEvent)
      assert.deepInclude(w.state(), { status: "queued", results: { c1: { kind: "child", agent: "beta", status: "completed", output: 7 } } })
    })
    it("the last child's end resumes the parent; each child reports once; an unknown child is rejected", () => {
      const one = [...waitingForChildren, { _tag: "ChildTaskFinished", childId: "c1", agent: "beta", status: "completed", output: 1, resumed: false } as const]
      given(...waitingForChildren).when(cmd.childDone("c1", 1)).then(one.at(-1)!)
      const w = given(...one).when({ _tag: "ChildFinished", taskId: id, childId: "c2", status: "failed", error: { message: "x", kind: "fatal" }, now: NOW })
      w.then({ _tag: "ChildTaskFinished", childId: "c2", agent: "beta", status: "failed", error: { message: "x", kind: "fatal" }, resumed: true })
      assert.deepInclude(w.state(), { status: "queued" })
      given(...one).when(cmd.childDone("c1")).rejects({ _tag: "ResultAlreadyReceived", id: "c1" })
      given(...one).when(cmd.childDone("c9")).rejects({ _tag: "ResultNotPending", id: "c9", status: "waiting" })
    })
    it("a cancelled or failed child never leaves its parent stuck: its end is a result like any other", () => {
      const w = given(...waitingForChildren, { _tag: "ChildTaskFinished", childId: "c1", agent: "beta", status: "cancelled", resumed: false })
        .when({ _tag: "ChildFinished", taskId: id, childId: "c2", status: "cancelled", now: NOW })
      assert.deepInclude(w.state(), { status: "queued" })
    })
    it("a child whose wait item timed out is marked so (the follow-up cancels it) and cannot report later", () => {
      const g = given(...spawned, { ...parkedFor({ id: "c1", kind: "child", timeoutAt: NOW, onTimeout: "resume" }), deadline: NOW } as TaskEvent)
      const after = g.when(cmd.timeout(NOW)).state()!
      assert.deepStrictEqual(after.children.c1, { agent: "beta", end: "timedOut" })
      assert.strictEqual(decide(cmd.childDone("c1"), after)._tag, "Rejected")
    })
    it("a finished parent rejects its children's ends (they are cancelled by the follow-up step)", () =>
      given(...spawned, { _tag: "TaskCancelled", lease: 1 }).when(cmd.childDone("c1")).rejects({
        _tag: "TaskAlreadyFinished",
        status: "cancelled"
      }))
  })

  describe("scenarios", () => {
    /** Runs commands one after the other through the model; returns the history and final state. */
    const scenario = (...commands: ReadonlyArray<TaskCommand>) => {
      let state: State = undefined
      const events: Array<TaskEvent> = []
      for (const command of commands) {
        const applied = applyCommand(command, state)
        assert.strictEqual(applied.decision._tag, "Accepted", `${command._tag} was rejected`)
        state = applied.state
        events.push(...applied.recorded.map((r) => r.event))
      }
      return { state: state!, events }
    }

    it("retries exhausted: failed, with every attempt's error in the history", () => {
      const { events, state } = scenario(
        cmd.enqueue(2),
        cmd.claim(0),
        cmd.fail(1, "retry", "e1"),
        cmd.claim(1),
        cmd.fail(2, "backoff", "e2"),
        cmd.wake(NOW + 500),
        cmd.claim(2),
        cmd.fail(3, "retry", "e3")
      )
      const failures = events.filter((e) => e._tag === "TaskFailed")
      assert.deepStrictEqual(failures.map((e) => [e.error.message, e.decision, e.retries]), [
        ["e1", "retry", 1],
        ["e2", "backoff", 2],
        ["e3", "failed", 2]
      ])
      assert.include(state, { status: "failed", retries: 2, maxRetries: 2, lease: 3 })
    })

    it("steering sent while queued is applied by the first turn", () => {
      const { state } = scenario(cmd.enqueue(), cmd.steer("hint"), cmd.claim(0), cmd.turn(1, 1))
      assert.deepStrictEqual(state.steering, [])
      assert.strictEqual(state.turns, 1)
    })

    it("a zombie worker changes nothing after its task was recovered and claimed again", () => {
      const { state } = scenario(cmd.enqueue(), cmd.claim(0, "zombie"), cmd.recover(1), cmd.claim(1, "w2"))
      for (const command of leasedCommands(1)) {
        assert.deepStrictEqual(decide(command, state), {
          _tag: "Rejected",
          rejection: { _tag: "StaleLease", currentLease: 2, status: "processing" }
        })
      }
    })
  })
})

// ---------------------------------------------------------------------------------------------------
// properties

const runs = Number(process.env.DECIDER_RUNS ?? 200)
const steps = fc.oneof(timedStepsArb(2, 60), waitStepsArb(60))

const workerTags = new Set(["Heartbeat", "CompleteTurn", "Complete", "Fail", "AcknowledgeCancel", "Release", "Recover", "Wait", "SpawnChildren"])

/** Why a state is not valid (empty: valid). */
const problems = (s: TaskState): ReadonlyArray<string> => {
  const out: Array<string> = []
  const check = (ok: boolean, what: string) => ok || out.push(what)
  check(TaskStatusSchema.literals.includes(s.status), "known status")
  check(Number.isInteger(s.lease) && s.lease >= 0, "lease is a whole number ≥ 0")
  check(s.retries >= 0 && s.retries <= s.maxRetries, "0 ≤ retries ≤ maxRetries")
  check(Number.isInteger(s.turns) && s.turns >= 0 && s.turns <= s.lease, "0 ≤ turns ≤ claims")
  check(s.version >= 1, "version ≥ 1")
  check(s.createdAt <= s.updatedAt, "createdAt ≤ updatedAt")
  check((s.worker !== undefined) === (s.status === "processing"), "a worker exactly while processing")
  check(s.status !== "processing" || s.lease >= 1, "processing under a claimed lease")
  check((s.retryAt !== undefined) === (s.status === "backoff"), "a retry time exactly while in backoff")
  check(
    !s.cancelRequested || s.status === "processing" || s.status === "cancelled" || s.status === "expired",
    "a requested cancel ends cancelled"
  )
  check(!isTerminal(s.status) || s.steering.length === 0, "no pending steering once finished")
  check(s.status !== "completed" || "output" in s, "completed has an output")
  check(s.status !== "failed" || s.error !== undefined, "failed has an error")
  check(s.status !== "expired" || (s.payload === null && !("output" in s)), "expired keeps no hot data")
  const open = outstanding(s.wait, s.results)
  check(s.status !== "waiting" || open.length > 0, "waiting for something outstanding")
  check(open.length === 0 || s.status === "waiting", "outstanding items only while waiting")
  const earliest = Math.min(...open.flatMap((i) => i.timeoutAt === undefined ? [] : [i.timeoutAt]))
  check(s.deadline === (s.status === "waiting" && Number.isFinite(earliest) ? earliest : undefined), "the deadline is the earliest outstanding timeout, while waiting")
  check(!isTerminal(s.status) || (s.wait.length === 0 && Object.keys(s.results).length === 0), "no wait or results once finished")
  check(s.wait.every((i) => i.kind === "result" || s.children[i.id] !== undefined), "a child item names a spawned child")
  check(Object.keys(s.results).every((rid) => s.wait.some((i) => i.id === rid) || s.children[rid] !== undefined), "a result belongs to the wait or to a child")
  return out
}

describe("TaskDecider properties", () => {
  it("terminal states absorb: only Expire (once) produces an event; Cancel of a cancelled task is accepted with none", () => {
    let checked = 0
    fc.assert(
      fc.property(steps, (s) => {
        runModel(s, (command, before, { decision }) => {
          if (before === undefined || !isTerminal(before.status)) return
          checked++
          const events = decision._tag === "Accepted" ? decision.events : []
          if (command._tag === "Expire" && before.status !== "expired") {
            assert.deepStrictEqual(decision, { _tag: "Accepted", events: [{ _tag: "TaskExpired", lease: before.lease }] })
          } else {
            assert.deepStrictEqual(events, [])
            assert.strictEqual(decision._tag === "Accepted", command._tag === "Cancel" && before.status === "cancelled")
          }
        })
      }),
      { numRuns: runs }
    )
    assert.isAbove(checked, 0)
  })

  it("a command with a stale lease is rejected and changes nothing", () => {
    let stale = 0
    fc.assert(
      fc.property(steps, (s) => {
        runModel(s, (command, before, { decision, state }) => {
          if (!("lease" in command) || before === undefined) return
          const live = command._tag === "Claim"
            ? before.status === "queued" && before.lease === command.lease
            : before.status === "processing" && before.lease === command.lease
          if (live) return
          stale++
          assert.deepStrictEqual(decision, {
            _tag: "Rejected",
            rejection: { _tag: "StaleLease", currentLease: before.lease, status: before.status }
          })
          assert.strictEqual(state, before)
        })
      }),
      { numRuns: runs }
    )
    assert.isAbove(stale, 0)
  })

  it("the lease never decreases, and only a claim raises it (by one)", () => {
    fc.assert(
      fc.property(steps, (s) => {
        runModel(s, (command, before, { state }) => {
          if (before === undefined || state === undefined) return
          assert.strictEqual(state.lease - before.lease, command._tag === "Claim" && state !== before ? 1 : 0)
        })
      }),
      { numRuns: runs }
    )
  })

  it("every state reached by evolving decide's events is valid (retries never exceed maxRetries)", () => {
    fc.assert(
      fc.property(steps, (s) => {
        runModel(s, (command, _before, { state }) => {
          if (state !== undefined) assert.deepStrictEqual(problems(state), [], `after ${command._tag}`)
        })
      }),
      { numRuns: runs }
    )
  })

  it("the version is the number of events in the history, heartbeats excluded; a rejection changes nothing", () => {
    fc.assert(
      fc.property(steps, (s) => {
        const counts = new Map<string, number>()
        runModel(s, (command, before, { decision, state }) => {
          if (decision._tag === "Rejected") return assert.strictEqual(state, before)
          const n = (counts.get(command.taskId) ?? 0) + decision.events.filter(isHistoryEvent).length
          counts.set(command.taskId, n)
          assert.strictEqual(state?.version, n)
        })
      }),
      { numRuns: runs }
    )
  })

  it("worker commands on a task that does not exist are TaskNotFound", () => {
    fc.assert(
      fc.property(steps, (s) => {
        runModel(s, (command, before, { decision }) => {
          if (before === undefined && command._tag !== "Enqueue") {
            assert.deepStrictEqual(decision, { _tag: "Rejected", rejection: { _tag: "TaskNotFound" } })
          }
          if (workerTags.has(command._tag) && decision._tag === "Accepted") assert.strictEqual(before?.status, "processing")
        })
      }),
      { numRuns: runs }
    )
  })
})
