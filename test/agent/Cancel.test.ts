/**
 * Interrupting a running turn (its fiber, or its abort signal) aborts the model's HTTP request and the
 * tools' signal promptly, and calls onRunCancelled.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schema } from "effect"
import { Agent } from "../../src/agent/Agent.ts"
import { tool } from "../../src/agent/Tool.ts"
import { type FakeModelServer, reply } from "../support/FakeModelServer.ts"
import { fakeModel, runTurn, turnContext } from "../support/TurnDriver.ts"

/** Polls until `done` holds (every 5 ms, for at most 5 s). */
const eventually = (done: () => boolean) =>
  Effect.gen(function*() {
    while (!done()) yield* Effect.sleep("5 millis")
  }).pipe(Effect.timeout("5 seconds"))

const slowAgent = (server: FakeModelServer, cancelled: Array<unknown>, stream = false) =>
  new Agent({
    name: "slow",
    model: "m",
    stream,
    client: { baseURL: server.baseURL, apiKey: "test" },
    hooks: { onRunCancelled: (_c, _t, reason) => void cancelled.push(reason ?? "interrupted") }
  })

describe("interrupting a turn", () => {
  for (const stream of [false, true]) {
    it.live(`interrupting the turn's fiber aborts the model request at once${stream ? " (streaming)" : ""}`, () =>
      Effect.gen(function*() {
        const server = yield* fakeModel([reply.text("too late", { delayMs: 30_000 })])
        const cancelled: Array<unknown> = []
        const agent = slowAgent(server, cancelled, stream)
        const fiber = yield* Effect.forkChild(runTurn(agent, turnContext(agent, { query: "q" })))
        yield* eventually(() => server.requests.length === 1)
        const interruptedAt = Date.now()
        yield* Fiber.interrupt(fiber)
        yield* eventually(() => server.requests[0]!.abortedAt !== undefined)
        const request = server.requests[0]!
        assert.isUndefined(request.respondedAt)
        assert.isBelow(request.abortedAt! - interruptedAt, 1_000, "aborted promptly, not after the 30 s reply")
        assert.strictEqual(cancelled.length, 1)
      }))
  }

  it.live("aborting the turn's signal aborts the request and ends the turn as interrupted", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.text("too late", { delayMs: 30_000 })])
      const cancelled: Array<unknown> = []
      const agent = slowAgent(server, cancelled)
      const controller = new AbortController()
      const fiber = yield* Effect.forkChild(runTurn(agent, turnContext(agent, { query: "q" }, { signal: controller.signal })))
      yield* eventually(() => server.requests.length === 1)
      controller.abort("cancel requested")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.hasInterrupts(exit))
      yield* eventually(() => server.requests[0]!.abortedAt !== undefined)
      assert.deepStrictEqual(cancelled, ["cancel requested"])
    }))

  it.live("interrupting the turn aborts the signal a running tool was given", () =>
    Effect.gen(function*() {
      let toolSignal: AbortSignal | undefined
      const hang = tool({
        name: "hang",
        parameters: Schema.Struct({}),
        execute: (_args, ctx) => {
          toolSignal = ctx.signal
          return new Promise(() => {})
        }
      })
      const server = yield* fakeModel([reply.toolCalls([{ name: "hang", arguments: {} }])])
      const agent = new Agent({ name: "hanging", model: "m", tools: [hang], client: { baseURL: server.baseURL, apiKey: "t" } })
      const fiber = yield* Effect.forkChild(runTurn(agent, turnContext(agent, { query: "q" })))
      yield* eventually(() => toolSignal !== undefined)
      assert.isFalse(toolSignal!.aborted)
      yield* Fiber.interrupt(fiber)
      assert.isTrue(toolSignal!.aborted)
      assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(fiber)))
    }))
})
