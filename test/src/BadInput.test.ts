/**
 * Bad input gets a clear typed error in the Promise API, and nothing is written: unknown ids, malformed
 * payloads and messages, cancel/steer of finished tasks, invalid config, and an unreachable Redis.
 */
import { Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { defineAgent, Done } from "../../src/Agent.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig, ObservabilityConfig, TaskTTLConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { freshKeyspace, keysMatching, rawClient, testRedisOptions } from "../support/TestRedis.ts"

const { namespace } = freshKeyspace()
const o = new Orchestrator({ ...testRedisOptions, namespace })
const agent = defineAgent({
  name: "strict",
  payload: Schema.Struct({ n: Schema.Number }),
  turn: () => Promise.resolve(Done(1))
})
const redis = rawClient()
afterAll(async () => {
  await o.stop()
  redis.disconnect()
})

const keysOfNamespace = () => keysMatching(redis, `{${namespace}:*`)

const rejection = async (p: Promise<unknown>) => {
  try {
    await p
  } catch (e) {
    return e as { _tag: string; message: string }
  }
  throw new Error("expected a rejection")
}

describe("bad input", () => {
  it("a malformed payload or task id is refused and nothing is written", async () => {
    const e = await rejection(o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { n: "one" } as never })))
    expect(e._tag).toBe("InvalidInput")
    expect(e.message).toMatch(/invalid payload for agent strict/)
    const e2 = await rejection(o.enqueueTask(agent, { ...agent.createTask({ ownerId: "u", payload: { n: 1 } }), id: "a b{c}" }))
    expect(e2._tag).toBe("InvalidInput")
    const e3 = await rejection(o.enqueueTask(agent, agent.createTask({ ownerId: "", payload: { n: 1 } })))
    expect(e3._tag).toBe("InvalidInput")
    expect(await keysOfNamespace()).toEqual([])
  })

  it("unknown ids: status and history reject, data is null, cancel and steer reject", async () => {
    expect((await rejection(o.getTaskStatus("nope")))._tag).toBe("TaskNotFound")
    expect((await rejection(o.getTaskHistory("nope")))._tag).toBe("TaskNotFound")
    expect(await o.getTaskData("nope")).toBeNull()
    expect((await rejection(o.cancelTask("nope")))._tag).toBe("TaskNotFound")
    expect((await rejection(o.steerTask("nope", [{ role: "user", content: "x" }])))._tag).toBe("TaskNotFound")
  })

  it("duplicate ids, malformed steering, and finished tasks are refused", async () => {
    const task = agent.createTask({ ownerId: "u", payload: { n: 1 } })
    await o.enqueueTask(agent, task)
    expect((await rejection(o.enqueueTask(agent, task)))._tag).toBe("TaskAlreadyExists")
    expect((await rejection(o.steerTask(task.id, [])))._tag).toBe("InvalidInput")
    expect((await rejection(o.steerTask(task.id, "hello" as never)))._tag).toBe("InvalidInput")
    await o.cancelTask(task.id)
    await o.cancelTask(task.id) // cancelling a cancelled task is a no-op
    const e = await rejection(o.steerTask(task.id, [{ role: "user", content: "x" }]))
    expect(e).toMatchObject({ _tag: "TaskAlreadyFinished", message: `task ${task.id} is already cancelled` })
    expect((await o.getTaskHistory(task.id)).map((x) => x.event._tag)).toEqual(["TaskEnqueued", "TaskCancelled"])
  })

  it("invalid configuration throws InvalidConfig naming the field", () => {
    expect(() => new AgentWorkerConfig({ workers: 0 })).toThrow(/AgentWorkerConfig.*workers/)
    expect(() => new AgentWorkerConfig({ turnTimeout: -1 })).toThrow(/turnTimeout/)
    expect(() => new AgentWorkerConfig({ wrkers: 2 } as never)).toThrow(/wrkers/)
    expect(() => new MaintenanceWorkerConfig({ interval: 0 })).toThrow(/interval/)
    expect(() => new TaskTTLConfig({ completedTtl: Number.NaN })).toThrow(/completedTtl/)
    expect(() => new ObservabilityConfig({ port: 70000 })).toThrow(/port/)
    expect(() => new ObservabilityConfig({ authToken: "short" })).toThrow(/authToken/)
    expect(() => new ObservabilityConfig({ gaugesReadEveryMs: -1 })).toThrow(/gaugesReadEveryMs/)
    expect(() => new Orchestrator({ namespace: "bad ns" })).toThrow(/namespace/)
    expect(() => new Orchestrator({ partitions: 0 })).toThrow(/partitions/)
    expect(() => o.registerRunner({ agent }).registerRunner({ agent })).toThrow(/already registered/)
    expect(() => defineAgent({ name: "no spaces", turn: () => Promise.resolve(Done(0)) })).toThrow(/agent name/)
  })

  it("an unreachable Redis is a RedisError, not a hang", async () => {
    const dead = new Orchestrator({ redisUrl: "redis://127.0.0.1:1", namespace })
    const e = await rejection(dead.getTaskStatus("x"))
    expect(e._tag).toBe("RedisError")
    expect(e.message).toMatch(/ECONNREFUSED|connect/)
    await dead.stop()
  })

  it("a namespace's partition count cannot change", async () => {
    const other = new Orchestrator({ ...testRedisOptions, namespace, partitions: 4 })
    await o.getTaskData("x") // the namespace was opened with 1 partition
    const e = await rejection(other.getTaskData("x"))
    expect(e).toMatchObject({ _tag: "InvalidConfig" })
    expect(e.message).toMatch(/has 1 partitions; it cannot be opened with 4/)
    await other.stop()
  })
})

describe("idempotency keys", () => {
  it("one task per (agent, key), for single and batch enqueues", async () => {
    const first = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { n: 1 } }), { idempotencyKey: "order-42" })
    const again = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { n: 2 } }), { idempotencyKey: "order-42" })
    expect(again).toBe(first)
    expect((await o.getTaskData(first))?.payload).toEqual({ n: 1 })
    expect((await o.getTaskHistory(first)).length).toBe(1)
    const batch = await o.enqueueTasks(agent, [
      agent.createTask({ ownerId: "u", payload: { n: 3 }, idempotencyKey: "order-42" }),
      agent.createTask({ ownerId: "u", payload: { n: 4 }, idempotencyKey: "order-43" }),
      agent.createTask({ ownerId: "u", payload: { n: 5 }, idempotencyKey: "order-43" })
    ])
    expect(batch.map((r) => r.id)).toEqual([first, batch[1]!.id, batch[1]!.id])
    expect(batch.every((r) => r.error === undefined)).toBe(true)
    expect((await o.getTaskData(batch[1]!.id))?.payload).toEqual({ n: 4 })
  })
})

describe("bulk enqueue", () => {
  const wide = new Orchestrator({ ...testRedisOptions, namespace: freshKeyspace().namespace, partitions: 4 })
  afterAll(() => wide.stop())

  it("answers each task in input order across partitions and pipelines: invalid, duplicate or enqueued", async () => {
    const existing = ["dup-0", "dup-1", "dup-2"]
    for (const id of existing) await wide.enqueueTask(agent, agent.createTask({ id, ownerId: "u", payload: { n: -1 } }))
    // 47 tasks: several pipelines per partition (executeMany sends 10 commands a pipeline), mixed outcomes.
    const kind = (i: number) => i % 7 === 3 ? "invalid" : i % 11 === 5 ? "duplicate" : "new"
    const tasks = Array.from({ length: 47 }, (_, i) =>
      kind(i) === "invalid"
        ? agent.createTask({ id: `bulk-${i}`, ownerId: "u", payload: { n: String(i) } as never })
        : agent.createTask({ id: kind(i) === "duplicate" ? existing[i % 3]! : `bulk-${i}`, ownerId: "u", payload: { n: i } }))
    const results = await wide.enqueueTasks(agent, tasks)
    expect(results.map((r) => r.id)).toEqual(tasks.map((t) => String(t.id)))
    expect(results.map((r) => r.error?._tag ?? "enqueued")).toEqual(tasks.map((_, i) =>
      ({ invalid: "InvalidInput", duplicate: "TaskAlreadyExists", new: "enqueued" })[kind(i)]
    ))
    for (const [i, task] of tasks.entries()) {
      const data = await wide.getTaskData(String(task.id))
      if (kind(i) === "invalid") expect(data).toBeNull()
      else expect(data?.payload).toEqual({ n: kind(i) === "new" ? i : -1 })
    }
  })
})

describe("odd but valid input", () => {
  const odd = new Orchestrator({ ...testRedisOptions, namespace: freshKeyspace().namespace })
  afterAll(() => odd.stop())

  it("keeps an owner id with quotes, backslashes, control characters and non-ASCII intact in the history", async () => {
    const ownerId = 'a"b\\c\nd/é\u0001x\u007f'
    const id = await odd.enqueueTask(agent, agent.createTask({ ownerId, payload: { n: 1 } }))
    const [enqueued] = await odd.getTaskHistory(id)
    expect(enqueued?.ownerId).toBe(ownerId)
    expect((await odd.getTaskData(id))?.ownerId).toBe(ownerId)
    await odd.cancelTask(id)
  })
})
