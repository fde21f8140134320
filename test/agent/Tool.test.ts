/**
 * Tools: the JSON schema derived from the parameters Schema, argument decoding, and how a turn runs
 * tool calls (errors back to the model, FatalAgentError fails the task, calls run concurrently); a
 * deferred call makes the turn wait and the resumed turn answers it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import { classifyFailure, FatalAgentError } from "../../src/AgentErrors.ts"
import { Agent } from "../../src/agent/Agent.ts"
import { deferred, resultIdOf, tool } from "../../src/agent/Tool.ts"
import { reply } from "../support/FakeModelServer.ts"
import { fakeModel, runToCompletion, runTurn, turnContext } from "../support/TurnDriver.ts"

const Weather = Schema.Struct({
  city: Schema.String.annotate({ description: "the city" }),
  days: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 7 }))),
  unit: Schema.Literals(["c", "f"])
})

const weather = tool({
  name: "weather",
  description: "The forecast for a city",
  parameters: Weather,
  execute: ({ city, days, unit }) => ({ city, days: days ?? 1, unit, forecast: "sunny" })
})

describe("tool definitions", () => {
  it("derives a strict JSON schema from the parameters Schema", () => {
    const fn = weather.definition.function
    assert.strictEqual(fn.name, "weather")
    assert.strictEqual(fn.description, "The forecast for a city")
    assert.strictEqual(fn.strict, true)
    const params = fn.parameters as any
    assert.strictEqual(params.type, "object")
    assert.strictEqual(params.additionalProperties, false)
    // Strict mode: every property is required; the optional one accepts null instead.
    assert.deepStrictEqual([...params.required].sort(), ["city", "days", "unit"])
    assert.deepStrictEqual(params.properties.city, { type: "string", description: "the city" })
    assert.deepStrictEqual(params.properties.unit, { type: "string", enum: ["c", "f"] })
    assert.isTrue(params.properties.days.anyOf.some((s: any) => s.type === "null"))
  })

  it.effect("falls back to a non-strict JSON schema when the strict subset cannot express the Schema", () =>
    Effect.gen(function*() {
      // Open-ended keys: OpenAI's strict subset has no index signatures at the root.
      const t = tool({
        name: "scores",
        parameters: Schema.StructWithRest(Schema.Struct({ player: Schema.String }), [
          Schema.Record(Schema.String, Schema.Union([Schema.String, Schema.Finite]))
        ]),
        execute: () => "x"
      })
      assert.strictEqual(t.definition.function.strict, false)
      const params = t.definition.function.parameters as any
      assert.strictEqual(params.type, "object")
      assert.deepStrictEqual(params.properties.player, { type: "string" })
      assert.deepStrictEqual(yield* t.decode(`{"player":"ann","round1":3}`), { player: "ann", round1: 3 })
    }))

  it("a tool without arguments gets an empty strict object schema", () => {
    const t = tool({ name: "now", parameters: Schema.Struct({}), execute: () => "12:00" })
    assert.deepStrictEqual(t.definition.function.parameters, {
      type: "object",
      properties: {},
      required: [],
      additionalProperties: false
    })
    assert.strictEqual(t.definition.function.strict, true)
  })

  it("rejects parameters that are not an object, and bad names", () => {
    assert.throws(() => tool({ name: "n", parameters: Schema.String, execute: () => "" }), /must be a Schema.Struct/)
    assert.throws(() => tool({ name: "has space", parameters: Weather, execute: () => "" }), /must match/)
  })

  it.effect("decodes arguments: null for an absent optional field, checks enforced", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* weather.decode(`{"city":"Oslo","days":null,"unit":"c"}`), { city: "Oslo", unit: "c" })
      assert.deepStrictEqual(yield* weather.decode(`{"city":"Oslo","days":3,"unit":"f"}`), { city: "Oslo", days: 3, unit: "f" })
      const outOfRange = yield* Effect.flip(weather.decode(`{"city":"Oslo","days":9,"unit":"c"}`))
      assert.match(outOfRange.message, /invalid arguments.*between 1 and 7/s)
      const notJson = yield* Effect.flip(weather.decode(`{"city":`))
      assert.match(notJson.message, /not valid JSON/)
    }))
})

const agentWith = (baseURL: string, tools: ReadonlyArray<ReturnType<typeof tool>>) =>
  new Agent({ name: "tools-agent", instructions: "Use tools.", model: "test-model", tools, client: { baseURL, apiKey: "test" } })

const toolMessages = (body: any) => body.messages.filter((m: any) => m.role === "tool")

describe("tool calls in a turn", () => {
  it.live("runs the tool with decoded arguments and sends its JSON result to the model", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ id: "c1", name: "weather", arguments: { city: "Oslo", days: null, unit: "c" } }]),
        reply.text("Sunny in Oslo.")
      ])
      const run = yield* runToCompletion(agentWith(server.baseURL, [weather]), { query: "Weather in Oslo?" })
      assert.strictEqual(run.output, "Sunny in Oslo.")
      assert.deepStrictEqual(toolMessages(server.requests[1]!.body), [
        { role: "tool", tool_call_id: "c1", content: JSON.stringify({ city: "Oslo", days: 1, unit: "c", forecast: "sunny" }) }
      ])
      assert.deepStrictEqual(server.requests[0]!.body.tools, [weather.definition])
    }))

  it.live("bad arguments, unknown tools and thrown errors go back to the model as tool errors", () =>
    Effect.gen(function*() {
      let ran = 0
      const failing = tool({
        name: "failing",
        parameters: Schema.Struct({}),
        execute: () => {
          throw new Error("disk on fire")
        }
      })
      const counted = tool({ name: "counted", parameters: Schema.Struct({ n: Schema.Int }), execute: ({ n }) => (ran += n) })
      const server = yield* fakeModel([
        reply.toolCalls([
          { id: "bad-json", name: "counted", arguments: "{not json" },
          { id: "bad-type", name: "counted", arguments: { n: "three" } },
          { id: "unknown", name: "nope", arguments: {} },
          { id: "throws", name: "failing", arguments: {} },
          { id: "ok", name: "counted", arguments: { n: 2 } }
        ]),
        reply.text("done")
      ])
      const run = yield* runToCompletion(agentWith(server.baseURL, [failing, counted]), { query: "go" })
      assert.strictEqual(run.output, "done")
      assert.strictEqual(ran, 2, "only the call with valid arguments ran")
      const byId = Object.fromEntries(toolMessages(server.requests[1]!.body).map((m: any) => [m.tool_call_id, m.content]))
      assert.match(byId["bad-json"], /^Error: arguments are not valid JSON/)
      assert.match(byId["bad-type"], /^Error: invalid arguments.*Expected number/s)
      assert.match(byId["unknown"], /^Error: unknown tool "nope"/)
      assert.strictEqual(byId["throws"], "Error: disk on fire")
      assert.strictEqual(byId["ok"], "2")
      const records = run.payloads[0]!.turns![0]!.toolCalls
      assert.deepStrictEqual(records.map((r) => [r.id, r.error !== undefined]), [
        ["bad-json", true],
        ["bad-type", true],
        ["unknown", true],
        ["throws", true],
        ["ok", false]
      ])
    }))

  it.live("a FatalAgentError from a tool fails the turn with no retry", () =>
    Effect.gen(function*() {
      const fatal = tool({
        name: "fatal",
        parameters: Schema.Struct({}),
        execute: () => Effect.fail(new FatalAgentError({ message: "account closed" }))
      })
      const server = yield* fakeModel([reply.toolCalls([{ name: "fatal", arguments: {} }])])
      const agent = agentWith(server.baseURL, [fatal])
      const error = yield* Effect.flip(runTurn(agent, turnContext(agent, { query: "go" })))
      assert.instanceOf(error, FatalAgentError)
      assert.strictEqual(classifyFailure(error), "fatal")
    }))

  it.live("the tool calls of one turn run concurrently", () =>
    Effect.gen(function*() {
      // Each call waits for the other to have started: run one after the other, they would never finish.
      const started = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
      const wait = tool({
        name: "wait",
        parameters: Schema.Struct({ i: Schema.Literals([0, 1]) }),
        execute: ({ i }, ctx) =>
          Deferred.succeed(started[i], undefined).pipe(
            Effect.andThen(Deferred.await(started[1 - i]!)),
            Effect.as(`${i} at ${ctx.taskId}/${ctx.toolCallId}`)
          )
      })
      const server = yield* fakeModel([
        reply.toolCalls([{ id: "a", name: "wait", arguments: { i: 0 } }, { id: "b", name: "wait", arguments: { i: 1 } }]),
        reply.text("both")
      ])
      const run = yield* runToCompletion(agentWith(server.baseURL, [wait]), { query: "go" }).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(run.output, "both")
      assert.deepStrictEqual(toolMessages(server.requests[1]!.body).map((m: any) => m.content), ["0 at task-1/a", "1 at task-1/b"])
    }))
})

describe("tools that answer later", () => {
  const ask = tool({
    name: "ask",
    parameters: Schema.Struct({ q: Schema.String }),
    execute: (_args, ctx) => {
      assert.strictEqual(ctx.resultId, ctx.toolCallId)
      return deferred({ timeout: 30 })
    }
  })

  it.live("a deferred call makes the turn wait; the resumed turn answers it right after the other tool messages", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ id: "c-ask", name: "ask", arguments: { q: "ok?" } }, { id: "c-w", name: "weather", arguments: { city: "Oslo", unit: "c" } }]),
        reply.text("done")
      ])
      const agent = agentWith(server.baseURL, [ask, weather])
      const first = yield* runTurn(agent, turnContext(agent, { query: "go" }, { resultToken: () => "tok-1" }))
      assert.strictEqual(first._tag, "Wait")
      if (first._tag !== "Wait") return
      assert.deepStrictEqual(first.pending, [{ id: "c-ask", token: "tok-1", timeout: 30, onTimeout: "resume" }])
      assert.deepStrictEqual(first.payload.pendingTools, [{ toolCallId: "c-ask", resultId: "c-ask", kind: "result" }])
      assert.deepStrictEqual(first.payload.turns?.[0]?.toolCalls.map((c) => c.pending), ["result", undefined])
      const second = yield* runTurn(
        agent,
        turnContext(agent, first.payload, { turn: 1, results: [{ id: "c-ask", kind: "result", result: "yes" }] })
      )
      assert.strictEqual(second._tag, "Done")
      const sent = toolMessages(server.requests[1]!.body).map((m: any) => [m.tool_call_id, m.content])
      assert.deepStrictEqual(sent, [["c-w", JSON.stringify({ city: "Oslo", days: 1, unit: "c", forecast: "sunny" })], ["c-ask", "yes"]])
      if (second._tag === "Done") assert.isUndefined(second.payload?.pendingTools)
    }))

  it.live("a timed-out result is told to the model as an error", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.toolCalls([{ id: "c1", name: "ask", arguments: { q: "?" } }]), reply.text("gave up")])
      const agent = agentWith(server.baseURL, [ask])
      const first = yield* runTurn(agent, turnContext(agent, { query: "go" }))
      if (first._tag !== "Wait") return assert.fail("expected a wait")
      yield* runTurn(agent, turnContext(agent, first.payload, { turn: 1, results: [{ id: "c1", kind: "result", timedOut: true }] }))
      assert.deepStrictEqual(toolMessages(server.requests[1]!.body).map((m: any) => m.content), ["Error: timed out waiting for the result"])
    }))

  it("a tool call id that is not a valid result id gets a derived one", () => {
    assert.strictEqual(resultIdOf("call_abc-1"), "call_abc-1")
    assert.match(resultIdOf("call/with spaces"), /^call-[0-9a-f]{32}$/)
  })
})
