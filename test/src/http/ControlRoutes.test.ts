/**
 * The control API through `inject()`: every route, with good and bad input, and the error table
 * (400 bad input, 401 without the token, 403 wrong result token, 404 unknown task/agent, 409 finished task or
 * result delivered twice, 413 oversized body).
 */
import { Effect, Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { defineAgent, Done } from "../../../src/Agent.ts"
import { ObservabilityConfig } from "../../../src/Config.ts"
import { Orchestrator } from "../../../src/Orchestrator.ts"
import { TaskStore } from "../../../src/TaskStore.ts"
import { freshKeyspace, testRedisOptions } from "../../support/TestRedis.ts"

const token = "a-test-token-of-some-length"
const agent = defineAgent({
  name: "echo",
  payload: Schema.Struct({ text: Schema.String }),
  turn: (ctx) => Promise.resolve(Done(ctx.payload.text))
})
const orchestrator = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
orchestrator.registerRunner({ agent })
const app = orchestrator.createObservabilityApp(new ObservabilityConfig({ authToken: token }))
const auth = { authorization: `Bearer ${token}` }

beforeAll(() => app.ready())
afterAll(async () => {
  await app.close()
  await orchestrator.stop()
})

const enqueue = (body: unknown, headers: Record<string, string> = auth) =>
  app.inject({ method: "POST", url: "/api/tasks", headers, payload: body as never })

describe("control API", () => {
  it("enqueues, reads status, data and history", async () => {
    const res = await enqueue({ agent: "echo", ownerId: "u1", payload: { text: "hi" } })
    expect(res.statusCode).toBe(201)
    const { id } = res.json() as { id: string }
    expect((await app.inject({ url: `/api/tasks/${id}/status`, headers: auth })).json()).toEqual({ status: "queued" })
    const data = (await app.inject({ url: `/api/tasks/${id}`, headers: auth })).json()
    expect(data).toMatchObject({ id, agent: "echo", ownerId: "u1", status: "queued", payload: { text: "hi" } })
    const history = (await app.inject({ url: `/api/tasks/${id}/history?start=0&count=10`, headers: auth })).json()
    expect(history.events.map((e: { event: { _tag: string } }) => e.event._tag)).toEqual(["TaskEnqueued"])
  })

  it("steers and cancels; a finished task answers 409", async () => {
    const { id } = (await enqueue({ agent: "echo", ownerId: "u1", payload: { text: "x" } })).json() as { id: string }
    const steer = await app.inject({
      method: "POST",
      url: `/api/tasks/${id}/steer`,
      headers: auth,
      payload: { messages: [{ role: "user", content: "more" }] }
    })
    expect(steer.statusCode).toBe(200)
    expect((await app.inject({ method: "POST", url: `/api/tasks/${id}/cancel`, headers: auth })).statusCode).toBe(200)
    const again = await app.inject({
      method: "POST",
      url: `/api/tasks/${id}/steer`,
      headers: auth,
      payload: { messages: [{ role: "user", content: "late" }] }
    })
    expect(again.statusCode).toBe(409)
    expect(again.json()).toEqual({ error: { tag: "TaskAlreadyFinished", message: `task ${id} is already cancelled` } })
  })

  it("rejects bad input with 400 and a clear message", async () => {
    const badPayload = await enqueue({ agent: "echo", ownerId: "u1", payload: { text: 42 } })
    expect(badPayload.statusCode).toBe(400)
    expect(badPayload.json().error.tag).toBe("InvalidInput")
    expect(badPayload.json().error.message).toContain("text")
    const missing = await enqueue({ agent: "echo", payload: {} })
    expect(missing.statusCode).toBe(400)
    const badId = await app.inject({ url: "/api/tasks/{bad}/status", headers: auth })
    expect(badId.statusCode).toBe(400)
    const notJson = await app.inject({
      method: "POST",
      url: "/api/tasks",
      headers: { ...auth, "content-type": "application/json" },
      payload: "{nope"
    })
    expect(notJson.statusCode).toBe(400)
    const badSteer = await app.inject({ method: "POST", url: "/api/tasks/abc/steer", headers: auth, payload: { messages: "x" } })
    expect(badSteer.statusCode).toBe(400)
  })

  it("answers 404 for unknown tasks and agents", async () => {
    expect((await app.inject({ url: "/api/tasks/does-not-exist", headers: auth })).statusCode).toBe(404)
    expect((await app.inject({ url: "/api/tasks/does-not-exist/status", headers: auth })).statusCode).toBe(404)
    expect((await app.inject({ method: "POST", url: "/api/tasks/does-not-exist/cancel", headers: auth })).statusCode)
      .toBe(404)
    const agentMissing = await enqueue({ agent: "nobody", ownerId: "u", payload: {} })
    expect(agentMissing.statusCode).toBe(404)
    expect(agentMissing.json().error.tag).toBe("AgentNotFound")
  })

  it("requires the token when one is configured", async () => {
    expect((await enqueue({ agent: "echo", ownerId: "u", payload: { text: "t" } }, {})).statusCode).toBe(401)
    const wrong = await app.inject({ url: "/api/tasks/x/status", headers: { authorization: "Bearer wrong" } })
    expect(wrong.statusCode).toBe(401)
    expect((await app.inject({ url: "/health" })).json()).toEqual({ status: "ok" })
  })

  it("delivers a deferred result with its per-call token: once, without the API token when the header carries it", async () => {
    const { id } = (await enqueue({ agent: "echo", ownerId: "u1", payload: { text: "w" } })).json() as { id: string }
    // Park the task as a worker would: claim it and end its turn waiting for "approval".
    await orchestrator.runEffect(Effect.gen(function*() {
      const store = yield* TaskStore
      yield* store.execute({ _tag: "Claim", taskId: id, lease: 0, worker: "w", now: Date.now() })
      yield* store.execute({
        _tag: "Wait",
        taskId: id,
        lease: 1,
        payload: { text: "w" },
        steeringApplied: 0,
        pending: [{ id: "approval", kind: "result", token: "per-call-token" }],
        now: Date.now()
      })
    }))
    const url = `/api/tasks/${id}/results/approval`
    const post = (headers: Record<string, string>, payload: unknown) => app.inject({ method: "POST", url, headers, payload: payload as never })
    expect((await post({}, { result: true })).statusCode).toBe(401)
    const noToken = await post(auth, { result: true })
    expect(noToken.statusCode).toBe(400)
    expect(noToken.json().error.message).toContain("x-result-token")
    const wrong = await post({ "x-result-token": "guess" }, { result: true })
    expect(wrong.statusCode).toBe(403)
    expect(wrong.json().error.tag).toBe("InvalidResultToken")
    const ok = await post({ "x-result-token": "per-call-token" }, { result: { approved: true } })
    expect(ok.statusCode).toBe(200)
    expect((await app.inject({ url: `/api/tasks/${id}/status`, headers: auth })).json()).toEqual({ status: "queued" })
    const twice = await post(auth, { result: { approved: false }, token: "per-call-token" })
    expect(twice.statusCode).toBe(409)
    expect(twice.json()).toEqual({
      error: { tag: "ResultAlreadyReceived", message: `result approval of task ${id} was already delivered` }
    })
    const unknown = await post({ "x-result-token": "per-call-token" }, { result: 1 })
    expect(unknown.statusCode).toBe(409)
    const other = await app.inject({ method: "POST", url: `/api/tasks/${id}/results/other`, headers: auth, payload: { result: 1, token: "t" } })
    expect(other.json().error.tag).toBe("ResultNotPending")
    // The header only opens this route: elsewhere the API token is still required.
    expect((await app.inject({ url: `/api/tasks/${id}`, headers: { "x-result-token": "per-call-token" } })).statusCode).toBe(401)
  })

  it("refuses oversized bodies with 413", async () => {
    const big = await enqueue({ agent: "echo", ownerId: "u", payload: { text: "x".repeat(2 * 1024 * 1024) } })
    expect(big.statusCode).toBe(413)
    expect(big.json().error.tag).toBe("PayloadTooLarge")
  })
})
