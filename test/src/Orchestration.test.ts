/**
 * Deferred results and child tasks end to end through the Promise API: a parent spawns children of another
 * agent and resumes with their outputs (a failed child included); a deferred result is completed once (a
 * second delivery is rejected); wait timeouts fail or resume the task; cancelling a waiting parent cancels
 * its children; a child whose end nobody reported (a crash before the follow-up step) reaches its parent
 * through the maintenance sweep of the outbox. Batches: progress and completion counted from their tasks'
 * ends (a failed one included), cancellation of a batch and its running tasks.
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { type BaseAgent, Continue, defineAgent, Done, Wait } from "../../src/Agent.ts"
import { FatalAgentError } from "../../src/AgentErrors.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig } from "../../src/Config.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { taskKeys } from "../../streams/Keys.ts"
import { orchestrators, waitFor } from "../support/Orchestrators.ts"
import { freshKeyspace } from "../support/TestRedis.ts"

const make = orchestrators()

const fast = new AgentWorkerConfig({ workers: 4, heartbeatInterval: 0.2, backoffBase: 0.05, backoffMax: 0.2, maxRetries: 1 })
const quickMaintenance = new MaintenanceWorkerConfig({ interval: 0.2 })
const tags = (history: ReadonlyArray<{ event: { _tag: string } }>) => history.map((e) => e.event._tag)

/** A child agent: squares `n`; fails fatally on a negative `n`; `slow` waits until cancelled. */
const squarer = defineAgent<{ n: number; slow?: boolean }>({
  name: "squarer",
  turn: async (ctx) => {
    if (ctx.payload.slow) {
      await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(new Error("aborted"))))
    }
    if (ctx.payload.n < 0) throw new FatalAgentError({ message: `cannot square ${ctx.payload.n}` })
    return Done(ctx.payload.n * ctx.payload.n)
  }
})

interface ParentPayload {
  readonly numbers: ReadonlyArray<number>
  readonly slow?: boolean
  readonly children?: ReadonlyArray<string>
}

/** A parent of another agent: spawns one squarer per number, waits for all, then sums what came back. */
const parentOf = (child: BaseAgent<{ n: number; slow?: boolean }>, turns: Array<number> = []) =>
  defineAgent<ParentPayload>({
    name: "summer",
    turn: async (ctx) => {
      turns.push(ctx.turn)
      if (ctx.turn === 0) {
        const ids = await ctx.spawn(ctx.payload.numbers.map((n) => ({ agent: child, payload: { n, slow: ctx.payload.slow ?? false } })))
        return Wait({ payload: { ...ctx.payload, children: ids }, pending: ids })
      }
      const outputs = ctx.results.map((r) => "status" in r && r.status === "completed" ? r.output as number : null)
      const errors = ctx.results.flatMap((r) => "status" in r && r.status === "failed" ? [r.error?.message] : [])
      return Done({ sum: outputs.reduce<number>((a, b) => a + (b ?? 0), 0), outputs, errors })
    }
  })

describe("child tasks", () => {
  it("a parent spawns children of another agent and resumes with their outputs, a failed child included", async () => {
    const { namespace } = freshKeyspace()
    const turns: Array<number> = []
    const parent = parentOf(squarer, turns)
    const o = make(namespace)
      .registerRunner({ agent: parent, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
      .registerRunner({ agent: squarer, agentWorkerConfig: fast })
    await o.start()
    const id = await o.enqueueTask(parent, parent.createTask({ ownerId: "u1", payload: { numbers: [2, 3, -1, 4] } }))
    const data = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    expect(data?.output).toEqual({ sum: 29, outputs: [4, 9, null, 16], errors: ["cannot square -1"] })
    expect(turns).toEqual([0, 1])

    const history = await o.getTaskHistory(id)
    const finished = history.filter((e) => e.event._tag === "ChildTaskFinished")
    expect(finished).toHaveLength(4)
    expect(tags(history).slice(0, 3)).toEqual(["TaskEnqueued", "TaskClaimed", "ChildTasksSpawned"])
    // A child may end before its parent's turn commits the wait: its ChildTaskFinished then comes first.
    const waiting = tags(history).indexOf("TaskWaiting")
    expect(waiting).toBeGreaterThan(2)
    expect(tags(history).slice(3, waiting).every((t) => t === "ChildTaskFinished")).toBe(true)
    expect(tags(history).at(-1)).toBe("TaskCompleted")
    // Each child records its parent, and is of the other agent.
    const children = (data?.children ?? []).map((c) => c.id)
    expect(children).toHaveLength(4)
    for (const child of children) {
      const c = await o.getTaskData(child)
      expect(c).toMatchObject({ agent: "squarer", parentId: id })
    }
    // The follow-up steps are done: nothing left in the outbox.
    await waitFor(() => o.runEffect(outboxSize(children.concat(id))), (n) => n === 0)
  })

  it("a retried parent turn spawns the same children again, which changes nothing", async () => {
    const { namespace } = freshKeyspace()
    let attempts = 0
    const parent = defineAgent<ParentPayload>({
      name: "flaky-parent",
      turn: async (ctx) => {
        if (ctx.turn === 0) {
          const ids = await ctx.spawn([{ agent: squarer, payload: { n: 5 } }, { agent: squarer, payload: { n: 6 }, key: "six" }])
          if (++attempts === 1) throw new Error("crash after spawning")
          return Wait({ payload: { ...ctx.payload, children: ids }, pending: ids })
        }
        return Done(ctx.results.map((r) => "output" in r ? r.output : undefined))
      }
    })
    const o = make(namespace)
      .registerRunner({ agent: parent, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
      .registerRunner({ agent: squarer, agentWorkerConfig: fast })
    await o.start()
    const id = await o.enqueueTask(parent, parent.createTask({ ownerId: "u1", payload: { numbers: [] } }))
    const data = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    expect(data?.output).toEqual([25, 36])
    expect(attempts).toBe(2)
    expect(data?.children).toHaveLength(2)
    const history = await o.getTaskHistory(id)
    expect(tags(history).filter((t) => t === "ChildTasksSpawned")).toHaveLength(1)
  })

  it("cancelling a waiting parent cancels its children", async () => {
    const { namespace } = freshKeyspace()
    const parent = parentOf(squarer)
    const o = make(namespace)
      .registerRunner({ agent: parent, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
      .registerRunner({ agent: squarer, agentWorkerConfig: fast })
    await o.start()
    const id = await o.enqueueTask(parent, parent.createTask({ ownerId: "u1", payload: { numbers: [1, 2], slow: true } }))
    const waiting = await waitFor(() => o.getTaskData(id), (d) => d?.status === "waiting")
    expect(waiting?.waitingFor?.map((i) => i.kind)).toEqual(["child", "child"])
    await waitFor(() => Promise.all(waiting!.children!.map((c) => o.getTaskStatus(c.id))), (s) => s.every((x) => x === "processing"))
    await o.cancelTask(id)
    expect(await o.getTaskStatus(id)).toBe("cancelled")
    for (const child of waiting!.children!) {
      await waitFor(() => o.getTaskStatus(child.id), (s) => s === "cancelled")
    }
  })

  it("a child whose end nobody reported (crash before the follow-up) reaches its parent through the outbox sweep", async () => {
    const { namespace } = freshKeyspace()
    // The child agent runs nowhere: its task is ended by hand, without the follow-up step a worker would run.
    const parent = parentOf(squarer)
    const o = make(namespace).registerRunner({ agent: parent, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
    await o.start()
    const id = await o.enqueueTask(parent, parent.createTask({ ownerId: "u1", payload: { numbers: [7] } }))
    const waiting = await waitFor(() => o.getTaskData(id), (d) => d?.status === "waiting")
    const child = waiting!.children![0]!.id
    await o.runEffect(Effect.gen(function*() {
      const store = yield* TaskStore
      yield* store.execute({ _tag: "Claim", taskId: child, lease: 0, worker: "gone", now: Date.now() })
      yield* store.execute({ _tag: "Complete", taskId: child, lease: 1, output: 49, steeringApplied: 0, now: Date.now() })
    }))
    const data = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    expect(data?.output).toMatchObject({ sum: 49 })
    await waitFor(() => o.runEffect(outboxSize([child])), (n) => n === 0)
  })
})

/** How many of these tasks are in their partition's outbox. */
const outboxSize = (taskIds: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    let n = 0
    for (const taskId of taskIds) {
      const k = taskKeys(store.keyspace, taskId)
      if ((yield* Effect.promise(() => store.conn.zscore(k.outbox, taskId))) !== null) n++
    }
    return n
  })

describe("deferred results", () => {
  const approver = defineAgent<{ step: string; token?: string }>({
    name: "approver",
    turn: (ctx) => {
      if (ctx.turn === 0) {
        const token = ctx.resultToken()
        return Promise.resolve(Wait({ payload: { step: "asked", token }, pending: [{ id: "approval", token }] }))
      }
      const [r] = ctx.results
      return Promise.resolve(Done(r?.kind === "result" && "result" in r ? r.result : r))
    }
  })

  it("a turn waits for a deferred result; it is delivered once and the next turn gets it", async () => {
    const { namespace } = freshKeyspace()
    const o = make(namespace).registerRunner({ agent: approver, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
    await o.start()
    const id = await o.enqueueTask(approver, approver.createTask({ ownerId: "u1", payload: { step: "start" } }))
    const waiting = await waitFor(() => o.getTaskData(id), (d) => d?.status === "waiting")
    const token = (waiting?.payload as { token: string }).token
    expect(waiting?.waitingFor).toEqual([{ id: "approval", kind: "result", token }])
    await expect(o.completeDeferredTool(id, "approval", { ok: true }, { token: "wrong" })).rejects.toMatchObject({ _tag: "InvalidResultToken" })
    await expect(o.completeDeferredTool(id, "other", 1)).rejects.toMatchObject({ _tag: "ResultNotPending" })
    await o.completeDeferredTool(id, "approval", { ok: true }, { token })
    await expect(o.completeDeferredTool(id, "approval", { ok: false })).rejects.toMatchObject({
      _tag: "ResultAlreadyReceived",
      message: `result approval of task ${id} was already delivered`
    })
    const data = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    expect(data?.output).toEqual({ ok: true })
    expect(tags(await o.getTaskHistory(id))).toEqual([
      "TaskEnqueued",
      "TaskClaimed",
      "TaskWaiting",
      "ToolResultReceived",
      "TaskClaimed",
      "TaskCompleted"
    ])
  })

  it("timeouts are enforced: onTimeout fail fails the task, resume gives the next turn a timeout result", async () => {
    const { namespace } = freshKeyspace()
    const impatient = defineAgent<{ onTimeout: "fail" | "resume" }>({
      name: "impatient",
      turn: (ctx) =>
        Promise.resolve(
          ctx.turn === 0
            ? Wait({ payload: ctx.payload, pending: [{ id: "answer", timeout: 0.3, onTimeout: ctx.payload.onTimeout }] })
            : Done(ctx.results)
        )
    })
    const o = make(namespace).registerRunner({ agent: impatient, agentWorkerConfig: fast, maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: 5 }) })
    await o.start()
    const failing = await o.enqueueTask(impatient, impatient.createTask({ ownerId: "u", payload: { onTimeout: "fail" } }))
    const resuming = await o.enqueueTask(impatient, impatient.createTask({ ownerId: "u", payload: { onTimeout: "resume" } }))
    // On time although the maintenance interval is 5 s: the worker told maintenance of the deadline.
    const failed = await waitFor(() => o.getTaskData(failing), (d) => d?.status === "failed", 4_000)
    expect(failed?.error).toEqual({ message: "timed out waiting for answer", kind: "wait_timeout" })
    const resumed = await waitFor(() => o.getTaskData(resuming), (d) => d?.status === "completed", 4_000)
    expect(resumed?.output).toEqual([{ id: "answer", kind: "result", timedOut: true }])
    await expect(o.completeDeferredTool(resuming, "answer", 1)).rejects.toMatchObject({ _tag: "TaskAlreadyFinished" })
  })

  it("a task not yet waiting rejects a result with a clear error", async () => {
    const { namespace } = freshKeyspace()
    const o = make(namespace)
    const plain = defineAgent({ name: "plain", turn: () => Promise.resolve(Continue({})) })
    const id = await o.enqueueTask(plain, plain.createTask({ ownerId: "u", payload: {} }))
    await expect(o.completeDeferredTool(id, "x", 1)).rejects.toMatchObject({
      _tag: "ResultNotPending",
      message: `task ${id} (queued) is not waiting for result x`
    })
    await expect(o.completeDeferredTool("no-such-task", "x", 1)).rejects.toMatchObject({ _tag: "TaskNotFound" })
    await expect(o.completeDeferredTool(id, "bad id!", 1)).rejects.toMatchObject({ _tag: "InvalidInput" })
  })
})

describe("batches", () => {
  it("counts its tasks' ends to completion, with events for progress and completion", async () => {
    const { namespace } = freshKeyspace()
    const o = make(namespace).registerRunner({ agent: squarer, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
    const tasks = [1, 2, -3].map((n) => squarer.createTask({ ownerId: "u1", payload: { n } }))
    const { batchId, taskIds, errors } = await o.enqueueBatch(squarer, tasks)
    expect(errors).toEqual([])
    expect(await o.getBatch(batchId)).toMatchObject({ status: "active", total: 3, finished: 0, progress: 0, ownerId: "u1", taskIds })
    await o.start()
    const done = await waitFor(() => o.getBatch(batchId), (b) => b?.status === "completed")
    expect(done).toMatchObject({ total: 3, finished: 3, completed: 2, failed: 1, cancelled: 0, progress: 1 })
    for (const id of taskIds) expect((await o.getTaskData(id))?.batchId).toBe(batchId)
    const history = await o.getBatchHistory(batchId)
    expect(tags(history)).toEqual(["BatchCreated", "BatchTaskFinished", "BatchTaskFinished", "BatchTaskFinished", "BatchCompleted"])
    expect(history.filter((e) => e.event._tag === "BatchTaskFinished").map((e) => (e.event as { finished: number }).finished))
      .toEqual([1, 2, 3])
    expect(history.at(-1)!.event).toEqual({ _tag: "BatchCompleted", completed: 2, failed: 1, cancelled: 0, expired: 0 })
    await expect(o.cancelBatch(batchId)).rejects.toMatchObject({ _tag: "BatchAlreadyFinished" })
    // Enqueuing again under the same batch id finishes nothing twice.
    await o.enqueueBatch(squarer, tasks, { batchId })
    expect((await o.getBatchHistory(batchId)).length).toBe(5)
  })

  it("cancelling a batch cancels its running and queued tasks; their ends are still counted", async () => {
    const { namespace } = freshKeyspace()
    const o = make(namespace).registerRunner({ agent: squarer, agentWorkerConfig: new AgentWorkerConfig({ workers: 1, heartbeatInterval: 0.2 }), maintenanceWorkerConfig: quickMaintenance })
    const { batchId, taskIds } = await o.enqueueBatch(
      squarer,
      [1, 2, 3].map((n) => squarer.createTask({ ownerId: "u2", payload: { n, slow: true } })),
      { batchId: "my-batch" }
    )
    expect(batchId).toBe("my-batch")
    await o.start()
    await waitFor(() => Promise.all(taskIds.map((id) => o.getTaskStatus(id))), (s) => s.includes("processing"))
    await o.cancelBatch(batchId)
    const batch = await waitFor(() => o.getBatch(batchId), (b) => b?.finished === 3)
    expect(batch).toMatchObject({ status: "cancelled", cancelled: 3, completed: 0 })
    for (const id of taskIds) expect(await o.getTaskStatus(id)).toBe("cancelled")
    const history = tags(await o.getBatchHistory(batchId))
    expect(history.slice(0, 2)).toEqual(["BatchCreated", "BatchCancelled"])
    expect(history).not.toContain("BatchCompleted")
    await o.cancelBatch(batchId) // again: nothing changes
    await expect(o.getBatchHistory("no-such-batch")).rejects.toMatchObject({ _tag: "BatchNotFound" })
    expect(await o.getBatch("no-such-batch")).toBeNull()
  })
})
