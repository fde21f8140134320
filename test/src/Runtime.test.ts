/**
 * The runtime end to end through the Promise API: tasks run turn by turn to completion, failures are
 * retried and classified, cancel interrupts a running turn in another "process" (orchestrator), steering
 * reaches the next turn, a stopped orchestrator hands back in-flight work, and a long turn renews its lease once per
 * heartbeat interval without writing an event.
 */
import { describe, expect, it } from "vitest"
import { Continue, defineAgent, Done } from "../../src/Agent.ts"
import { FatalAgentError, TransientAgentError } from "../../src/AgentErrors.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig } from "../../src/Config.ts"
import { orchestrators, waitFor } from "../support/Orchestrators.ts"
import { partitionKeys, partitionOf, taskKeys } from "../../streams/Keys.ts"
import { freshKeyspace, rawClient, testPartitions } from "../support/TestRedis.ts"

const make = orchestrators()

const fast = new AgentWorkerConfig({ workers: 4, heartbeatInterval: 0.2, backoffBase: 0.05, backoffMax: 0.2 })
const quickMaintenance = new MaintenanceWorkerConfig({ interval: 0.2 })

describe("runtime", () => {
  it("runs a multi-turn task to completion, one turn per pickup", async () => {
    const { namespace } = freshKeyspace()
    const agent = defineAgent<{ n: number }>({
      name: "counter",
      turn: (ctx) => Promise.resolve(ctx.payload.n >= 3 ? Done({ total: ctx.payload.n }) : Continue({ n: ctx.payload.n + 1 }))
    })
    const o = make(namespace).registerRunner({ agent, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
    await o.start()
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "u1", payload: { n: 0 } }))
    const data = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    expect(data?.output).toEqual({ total: 3 })
    expect(data?.turns).toBe(3)
    const history = await o.getTaskHistory(id)
    expect(history.map((e) => e.event._tag)).toEqual([
      "TaskEnqueued",
      "TaskClaimed", "TurnCompleted",
      "TaskClaimed", "TurnCompleted",
      "TaskClaimed", "TurnCompleted",
      "TaskClaimed", "TaskCompleted"
    ])
    expect(history.every((e) => e.taskId === id && e.agent === "counter" && e.ownerId === "u1")).toBe(true)

    // Stored, only the first entry names the task, agent and owner (ADR 0026); a page past it is named by it.
    const raw = await rawClient().lrange(taskKeys({ namespace, partitions: testPartitions }, id).log, 0, -1)
    expect(raw.map((e) => "taskId" in JSON.parse(e))).toEqual(history.map((_, i) => i === 0))
    expect(raw.map((e) => "ownerId" in JSON.parse(e))).toEqual(history.map((_, i) => i === 0))
    expect(await o.getTaskHistory(id, { start: 3, count: 2 })).toEqual(history.slice(3, 5))
  })

  it("retries failures, backs off transient ones, fails fatal ones at once", async () => {
    const { namespace } = freshKeyspace()
    let calls = 0
    const flaky = defineAgent({
      name: "flaky",
      turn: () => {
        calls++
        if (calls === 1) throw new Error("boom")
        if (calls === 2) return Promise.reject(new TransientAgentError({ message: "rate limited" }))
        return Promise.resolve(Done("ok"))
      }
    })
    const fatal = defineAgent({ name: "fatal", turn: () => Promise.reject(new FatalAgentError({ message: "bad request" })) })
    const o = make(namespace)
      .registerRunner({ agent: flaky, agentWorkerConfig: fast, maintenanceWorkerConfig: quickMaintenance })
      .registerRunner({ agent: fatal, agentWorkerConfig: fast })
    await o.start()
    const a = await o.enqueueTask(flaky, flaky.createTask({ ownerId: "u", payload: {} }))
    const b = await o.enqueueTask(fatal, fatal.createTask({ ownerId: "u", payload: {} }))
    const da = await waitFor(() => o.getTaskData(a), (d) => d?.status === "completed")
    expect(da?.retries).toBe(2)
    const ha = await o.getTaskHistory(a)
    const failures = ha.flatMap((e) => e.event._tag === "TaskFailed" ? [e.event] : [])
    expect(failures.map((f) => [f.decision, f.error.message])).toEqual([["retry", "boom"], ["backoff", "rate limited"]])
    expect(ha.map((e) => e.event._tag)).toContain("TaskBackoffElapsed")
    const db = await waitFor(() => o.getTaskData(b), (d) => d?.status === "failed")
    expect(db?.error).toEqual({ message: "bad request", kind: "FatalAgentError" })
    expect(db?.retries).toBe(0)
  })

  it("cancels a running turn from another orchestrator promptly", async () => {
    const { namespace } = freshKeyspace()
    let aborted = false
    const slow = defineAgent({
      name: "slow",
      turn: (ctx) =>
        new Promise((_, reject) => {
          ctx.signal.addEventListener("abort", () => {
            aborted = true
            reject(new Error("aborted"))
          })
        })
    })
    const worker = make(namespace).registerRunner({ agent: slow, agentWorkerConfig: new AgentWorkerConfig({ heartbeatInterval: 30 }) })
    await worker.start()
    const client = make(namespace)
    const id = await client.enqueueTask(slow, slow.createTask({ ownerId: "u", payload: {} }))
    await waitFor(() => client.getTaskStatus(id), (s) => s === "processing")
    const t0 = Date.now()
    await client.cancelTask(id)
    await waitFor(() => client.getTaskStatus(id), (s) => s === "cancelled", 5_000)
    expect(Date.now() - t0).toBeLessThan(5_000) // the heartbeat is 30 s away: only the notice can explain this
    expect(aborted).toBe(true)
    const tags = (await client.getTaskHistory(id)).map((e) => e.event._tag)
    expect(tags.slice(-2)).toEqual(["TaskCancelRequested", "TaskCancelled"])
  })

  it("delivers steering messages to the next turn", async () => {
    const { namespace } = freshKeyspace()
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const seen: Array<ReadonlyArray<unknown>> = []
    const chat = defineAgent<{ turn: number }>({
      name: "chat",
      turn: async (ctx) => {
        seen.push(ctx.steering)
        if (ctx.turn === 0) await gate
        return ctx.turn >= 1 ? Done("done") : Continue({ turn: ctx.turn + 1 })
      }
    })
    const o = make(namespace).registerRunner({ agent: chat, agentWorkerConfig: fast })
    await o.start()
    const id = await o.enqueueTask(chat, chat.createTask({ ownerId: "u", payload: { turn: 0 } }))
    await waitFor(() => o.getTaskStatus(id), (s) => s === "processing")
    await o.steerTask(id, [{ role: "user", content: "focus on costs" }])
    release()
    await waitFor(() => o.getTaskStatus(id), (s) => s === "completed")
    expect(seen).toEqual([[], [{ role: "user", content: "focus on costs" }]])
    const done = (await o.getTaskHistory(id)).at(-1)!.event
    expect(done).toMatchObject({ _tag: "TaskCompleted", steeringApplied: 1, steeringUnapplied: 0 })
  })

  it("hands in-flight work back on stop, and another worker finishes it", async () => {
    const { namespace } = freshKeyspace()
    const stuck = defineAgent({ name: "stuck", turn: () => new Promise<never>(() => {}) })
    const first = make(namespace).registerRunner({
      agent: stuck,
      agentWorkerConfig: new AgentWorkerConfig({ shutdownTimeout: 0.1 })
    })
    await first.start()
    const id = await first.enqueueTask(stuck, stuck.createTask({ ownerId: "u", payload: {} }))
    await waitFor(() => first.getTaskStatus(id), (s) => s === "processing")
    await first.stop()
    const second = make(namespace)
    const done = defineAgent({ name: "stuck", turn: () => Promise.resolve(Done(42)) })
    second.registerRunner({ agent: done })
    await second.start()
    const data = await waitFor(() => second.getTaskData(id), (d) => d?.status === "completed")
    expect(data?.output).toBe(42)
    const tags = (await second.getTaskHistory(id)).map((e) => e.event._tag)
    expect(tags).toEqual(["TaskEnqueued", "TaskClaimed", "TaskReleased", "TaskClaimed", "TaskCompleted"])
  })

  it("a long turn renews its lease once per heartbeat interval, and no heartbeat reaches a log", async () => {
    const keyspace = freshKeyspace()
    const { namespace } = keyspace
    let release = () => {}
    const released = new Promise<void>((r) => (release = r))
    const slow = defineAgent({ name: "long-turn", turn: async () => (await released, Done("ok")) })
    const o = make(namespace).registerRunner({ agent: slow, agentWorkerConfig: new AgentWorkerConfig({ heartbeatInterval: 0.4 }) })
    await o.start()
    const id = await o.enqueueTask(slow, slow.createTask({ ownerId: "u", payload: {} }))
    await waitFor(() => o.getTaskData(id), (d) => d?.status === "processing")
    // Every renewal while the turn runs 2.4 s, seen by polling the task's last heartbeat.
    const beats: Array<number> = []
    for (const end = Date.now() + 2_400; Date.now() < end;) {
      const hb = (await o.getTaskData(id))?.lastHeartbeatAt
      if (hb !== undefined && hb !== beats.at(-1)) beats.push(hb)
      await new Promise((r) => setTimeout(r, 20))
    }
    release()
    await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    // The first value is the claim's; then one renewal per 0.75–1 interval (0.3–0.4 s; some slack for a busy machine).
    const gaps = beats.slice(1).map((b, i) => b - beats[i]!)
    expect(gaps.length, JSON.stringify(gaps)).toBeGreaterThanOrEqual(4)
    for (const gap of gaps.slice(1)) {
      expect(gap, JSON.stringify(gaps)).toBeGreaterThanOrEqual(300)
      expect(gap, JSON.stringify(gaps)).toBeLessThan(700)
    }
    // Neither the history nor the partition log holds a heartbeat (ADR 0022).
    expect((await o.getTaskHistory(id)).map((e) => e.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed", "TaskCompleted"])
    const conn = rawClient()
    try {
      const log = await conn.xrange(partitionKeys(keyspace, partitionOf(keyspace, id)).events, "-", "+")
      expect(log.filter(([, f]) => f[1]!.includes('"_tag":"TaskHeartbeat"'))).toEqual([])
      expect(log.length).toBeGreaterThanOrEqual(3)
    } finally {
      conn.disconnect()
    }
  })
})
