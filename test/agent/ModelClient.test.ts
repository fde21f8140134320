/**
 * Model failures and the retry rules: each HTTP status class, connection and timeout errors, unreadable
 * completions, refusals and missing credentials, classified through a real turn.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { createServer } from "node:net"
import { classifyFailure, FatalAgentError, TransientAgentError } from "../../src/AgentErrors.ts"
import { Agent } from "../../src/agent/Agent.ts"
import { InvalidModelOutput, type ModelClientOptions, retryAfterMs } from "../../src/agent/ModelClient.ts"
import { type Reply, reply } from "../support/FakeModelServer.ts"
import { fakeModel, runTurn, turnContext } from "../support/TurnDriver.ts"

/** The error of one turn whose model call gets this reply. */
const failureFor = (r: Reply, options: Partial<ModelClientOptions> = {}) =>
  Effect.gen(function*() {
    const server = yield* fakeModel([r])
    const agent = new Agent({ name: "classify", model: "m", client: { baseURL: server.baseURL, apiKey: "test", ...options } })
    return yield* Effect.flip(runTurn(agent, turnContext(agent, { query: "q" })))
  })

/** A loopback port with nothing listening. */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
)

describe("model errors and the retry rules", () => {
  it.live("429 is transient, with the server's Retry-After", () =>
    Effect.gen(function*() {
      const e = yield* failureFor(reply.error(429, { retryAfter: "7", message: "slow down" }))
      assert.instanceOf(e, TransientAgentError)
      assert.strictEqual((e as TransientAgentError).retryAfterMs, 7000)
      assert.match((e as TransientAgentError).message, /429.*slow down/)
      assert.strictEqual(classifyFailure(e), "backoff")
    }))

  it.live("5xx, 408 and 409 are transient", () =>
    Effect.gen(function*() {
      for (const status of [500, 502, 503, 504, 408, 409]) {
        const e = yield* failureFor(reply.error(status))
        assert.instanceOf(e, TransientAgentError, `status ${status}`)
        assert.isUndefined((e as TransientAgentError).retryAfterMs)
      }
      const withDate = yield* failureFor(reply.error(503, { retryAfter: new Date(Date.now() + 60_000).toUTCString() }))
      const delay = (withDate as TransientAgentError).retryAfterMs!
      assert.isTrue(delay > 50_000 && delay <= 60_000, `retry after ${delay} ms`)
    }))

  it.live("400, 401, 403, 404 and 422 are fatal", () =>
    Effect.gen(function*() {
      for (const status of [400, 401, 403, 404, 422]) {
        const e = yield* failureFor(reply.error(status, { message: `no (${status})` }))
        assert.instanceOf(e, FatalAgentError, `status ${status}`)
        assert.strictEqual(classifyFailure(e), "fatal")
      }
    }))

  it.live("a refused connection and a timeout are transient", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const agent = new Agent({ name: "offline", model: "m", client: { baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "k" } })
      const refused = yield* Effect.flip(runTurn(agent, turnContext(agent, { query: "q" })))
      assert.instanceOf(refused, TransientAgentError)
      assert.match((refused as TransientAgentError).message, /connection/i)

      const slow = yield* failureFor(reply.text("late", { delayMs: 2_000 }), { timeoutMs: 100 })
      assert.instanceOf(slow, TransientAgentError)
      assert.match((slow as TransientAgentError).message, /timed out/i)
    }))

  it.live("an unreadable completion is retried at once", () =>
    Effect.gen(function*() {
      const e = yield* failureFor(reply.raw(200, `{"id": "x", "choices": []}`))
      assert.instanceOf(e, InvalidModelOutput)
      assert.strictEqual(classifyFailure(e), "retry")
    }))

  it.live("a refusal without an answer is fatal", () =>
    Effect.gen(function*() {
      const e = yield* failureFor(reply.refusal("I can't help with that."))
      assert.instanceOf(e, FatalAgentError)
      assert.match((e as FatalAgentError).message, /refused: I can't help/)
    }))

  it.live("missing credentials are fatal", () =>
    Effect.gen(function*() {
      const saved = process.env.XAI_API_KEY
      delete process.env.XAI_API_KEY
      try {
        const agent = new Agent({ name: "no-key", model: "grok", client: { provider: "xai" } })
        const e = yield* Effect.flip(runTurn(agent, turnContext(agent, { query: "q" })))
        assert.instanceOf(e, FatalAgentError)
        assert.match((e as FatalAgentError).message, /cannot make the model client/)
      } finally {
        if (saved !== undefined) process.env.XAI_API_KEY = saved
      }
    }))

  it("reads retry-after-ms, retry-after seconds and dates", () => {
    const now = Date.parse("2026-01-01T00:00:00Z")
    assert.strictEqual(retryAfterMs(new Headers({ "retry-after-ms": "250", "retry-after": "9" }), now), 250)
    assert.strictEqual(retryAfterMs(new Headers({ "retry-after": "1.5" }), now), 1500)
    assert.strictEqual(retryAfterMs(new Headers({ "retry-after": "Thu, 01 Jan 2026 00:00:30 GMT" }), now), 30_000)
    assert.strictEqual(retryAfterMs(new Headers({ "retry-after": "soon" }), now), undefined)
    assert.strictEqual(retryAfterMs(new Headers(), now), undefined)
  })
})
