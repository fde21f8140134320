/**
 * An LLM agent's turns driven as the worker drives them, against the fake model server: structured
 * output, maxTurns, steering, fallback models, dynamic settings, streaming and hooks.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import type { TurnOutcome } from "../../src/Agent.ts"
import { classifyFailure, FatalAgentError } from "../../src/AgentErrors.ts"
import { Agent, textDeltas } from "../../src/agent/Agent.ts"
import { agentContextFields } from "../../src/agent/AgentContext.ts"
import { InvalidModelOutput } from "../../src/agent/ModelClient.ts"
import { tool } from "../../src/agent/Tool.ts"
import { reply } from "../support/FakeModelServer.ts"
import { fakeModel, runToCompletion, runTurn, storeAndLoad, turnContext } from "../support/TurnDriver.ts"

// Schema.Finite rather than Schema.Number: the JSON form of Number also admits "NaN" and "Infinity".
const Answer = Schema.Struct({ city: Schema.String, temperature: Schema.Finite, summary: Schema.String })

const forecast = tool({
  name: "forecast",
  parameters: Schema.Struct({ city: Schema.String }),
  execute: ({ city }) => ({ city, temperature: city === "Oslo" ? 4 : 21 })
})

const client = (baseURL: string) => ({ baseURL, apiKey: "test" })

describe("an LLM agent's turns", () => {
  it.live("runs turn by turn, payloads fed back, to a validated structured output", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ id: "t1", name: "forecast", arguments: { city: "Oslo" } }]),
        reply.toolCalls([{ id: "t2", name: "forecast", arguments: { city: "Rome" } }]),
        reply.finalOutput({ city: "Rome", temperature: 21, summary: "Rome is warmer." })
      ])
      const agent = new Agent({
        name: "weather",
        instructions: "Compare the weather.",
        model: "model-a",
        tools: [forecast],
        outputType: Answer,
        client: client(server.baseURL)
      })
      const run = yield* runToCompletion(agent, { query: "Which is warmer, Oslo or Rome?" })
      assert.deepStrictEqual(run.output, { city: "Rome", temperature: 21, summary: "Rome is warmer." })
      assert.strictEqual(server.requests.length, 3)

      const first = server.requests[0]!.body
      assert.strictEqual(first.model, "model-a")
      assert.deepStrictEqual(first.messages, [
        {
          role: "system",
          content: "Compare the weather.\n\nYour final response must be made using the 'final_output' tool."
        },
        { role: "user", content: "Which is warmer, Oslo or Rome?" }
      ])
      assert.deepStrictEqual(first.tools.map((t: any) => t.function.name), ["forecast", "final_output"])
      assert.strictEqual(first.tools[1].function.strict, true)
      // Each turn sends what the previous ones built: assistant message, then its tool results.
      assert.deepStrictEqual(server.requests[1]!.body.messages.slice(2), [
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "t1", type: "function", function: { name: "forecast", arguments: `{"city":"Oslo"}` } }]
        },
        { role: "tool", tool_call_id: "t1", content: `{"city":"Oslo","temperature":4}` }
      ])
      assert.strictEqual(server.requests[2]!.body.messages.length, 6)

      const [p1, p2, final] = run.payloads
      assert.strictEqual(p1!.turn, 1)
      assert.strictEqual(p2!.turn, 2)
      assert.strictEqual(final!.turn, 3)
      assert.deepStrictEqual(final!.output, run.output)
      assert.deepStrictEqual(final!.turns!.map((t: any) => t.turn), [0, 1, 2])
      assert.deepStrictEqual(final!.turns!.map((t: any) => t.model), ["model-a", "model-a", "model-a"])
      // The final answer gets its tool message too: the conversation stays valid to continue.
      assert.deepStrictEqual(final!.messages!.at(-1), { role: "tool", tool_call_id: "call_2_0", content: "Final output accepted." })
      assert.isTrue(final!.turns!.every((t: any) => t.usage !== undefined && t.usage.totalTokens > 0))
    }))

  it.live("an invalid final output goes back to the model as a tool error, then the corrected one completes", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.finalOutput({ city: "Rome", temperature: "warm" }),
        reply.finalOutput(`{"city": "Rome"`),
        reply.finalOutput({ city: "Rome", temperature: 21, summary: "ok" })
      ])
      const agent = new Agent({ name: "strict-output", model: "m", outputType: Answer, client: client(server.baseURL) })
      const run = yield* runToCompletion(agent, { query: "q" })
      assert.deepStrictEqual(run.output, { city: "Rome", temperature: 21, summary: "ok" })
      const errors = server.requests[2]!.body.messages.filter((m: any) => m.role === "tool").map((m: any) => m.content)
      assert.strictEqual(errors.length, 2)
      assert.match(errors[0], /^Error: invalid arguments: Expected number\s+at \["temperature"\]/)
      assert.match(errors[1], /^Error: arguments are not valid JSON/)
    }))

  it.live("a non-object output type is wrapped for the model and unwrapped in the output", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.finalOutput({ output: ["a", "b"] })])
      const agent = new Agent({
        name: "list",
        model: "m",
        outputType: Schema.Array(Schema.String),
        client: client(server.baseURL)
      })
      const run = yield* runToCompletion(agent, { query: "q" })
      assert.deepStrictEqual(run.output, ["a", "b"])
      assert.deepStrictEqual(server.requests[0]!.body.tools[0].function.parameters.required, ["output"])
    }))

  it.live("without an output type the text answer is the output", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.text("Hello there.")])
      const agent = new Agent({ name: "plain", model: "m", client: client(server.baseURL) })
      const run = yield* runToCompletion(agent, { query: "Hi" })
      assert.strictEqual(run.output, "Hello there.")
      // No instructions, no tools: only the query is sent.
      assert.deepStrictEqual(server.requests[0]!.body.messages, [{ role: "user", content: "Hi" }])
      assert.isUndefined(server.requests[0]!.body.tools)
    }))
})

describe("maxTurns", () => {
  it.live("the last allowed turn forces the final_output tool", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ name: "forecast", arguments: { city: "Oslo" } }]),
        reply.toolCalls([{ name: "forecast", arguments: { city: "Rome" } }]),
        reply.finalOutput({ city: "Oslo", temperature: 4, summary: "cold" })
      ])
      const agent = new Agent({
        name: "limited",
        instructions: "Be quick.",
        model: "m",
        tools: [forecast],
        outputType: Answer,
        maxTurns: 3,
        modelSettings: { toolChoice: "auto", temperature: 0.2, parallelToolCalls: false, maxCompletionTokens: 100 },
        client: client(server.baseURL)
      })
      const run = yield* runToCompletion(agent, { query: "q" })
      assert.deepStrictEqual(run.output, { city: "Oslo", temperature: 4, summary: "cold" })
      const bodies = server.requests.map((r) => r.body)
      assert.deepStrictEqual(bodies.map((b) => b.tool_choice), [
        "auto",
        "auto",
        { type: "function", function: { name: "final_output" } }
      ])
      assert.strictEqual(bodies[0].temperature, 0.2)
      assert.strictEqual(bodies[0].parallel_tool_calls, false)
      assert.strictEqual(bodies[0].max_completion_tokens, 100)
      assert.match(bodies[0].messages[0].content, /You must reach a final response in 3 turns or less/)
    }))

  it.live("without an output type the last turn forbids tools, and its text is the output", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ name: "forecast", arguments: { city: "Oslo" } }]),
        reply.text("It is 4 degrees in Oslo.")
      ])
      const agent = new Agent({ name: "limited-text", model: "m", tools: [forecast], maxTurns: 2, client: client(server.baseURL) })
      const run = yield* runToCompletion(agent, { query: "q" })
      assert.strictEqual(run.output, "It is 4 degrees in Oslo.")
      assert.strictEqual(server.requests[0]!.body.tool_choice, undefined)
      assert.strictEqual(server.requests[1]!.body.tool_choice, "none")
    }))

  it.live("tool calls the model still makes on the last turn are answered, not run", () =>
    Effect.gen(function*() {
      let ran = 0
      const counted = tool({ name: "counted", parameters: Schema.Struct({}), execute: () => ++ran })
      const server = yield* fakeModel([reply.toolCalls([{ id: "x", name: "counted", arguments: {} }], { content: "Final words." })])
      const agent = new Agent({ name: "disobedient", model: "m", tools: [counted], maxTurns: 1, client: client(server.baseURL) })
      const run = yield* runToCompletion(agent, { query: "q" })
      assert.strictEqual(run.output, "Final words.")
      assert.strictEqual(ran, 0)
      assert.deepStrictEqual(run.payloads[0]!.messages!.at(-1), {
        role: "tool",
        tool_call_id: "x",
        content: "Not run: this was the last turn."
      })
    }))

  it.live("no valid final output on the last turn fails the attempt (retried), never continues", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.finalOutput({ city: 1 }),
        reply.text("I refuse to use tools"),
        reply.finalOutput({ city: "Oslo", temperature: 4, summary: "cold" })
      ])
      const agent = new Agent({ name: "last", model: "m", outputType: Answer, maxTurns: 1, client: client(server.baseURL) })
      const payload = { query: "q" }
      const invalid = yield* Effect.flip(runTurn(agent, turnContext(agent, payload)))
      assert.instanceOf(invalid, InvalidModelOutput)
      assert.strictEqual(classifyFailure(invalid), "retry")
      const noCall: any = yield* Effect.flip(runTurn(agent, turnContext(agent, payload, { retries: 1, attempt: 2 })))
      assert.match(noCall.message, /did not call final_output on the last turn/)
      const done = yield* runTurn(agent, turnContext(agent, payload, { retries: 2, attempt: 3 }))
      assert.strictEqual(done._tag, "Done")
      assert.strictEqual(server.requests.length, 3)
      // Every attempt starts from the same checkpoint: same request.
      assert.deepStrictEqual(server.requests[0]!.body.messages, server.requests[2]!.body.messages)
    }))
})

describe("steering", () => {
  it.live("steering messages are appended at the next turn boundary, after the query on the first turn", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ id: "t1", name: "forecast", arguments: { city: "Oslo" } }]),
        reply.text("Rome: 21 degrees.")
      ])
      const agent = new Agent({ name: "steered", model: "m", tools: [forecast], client: client(server.baseURL) })
      const run = yield* runToCompletion(agent, { query: "Weather in Oslo?" }, {
        steering: {
          0: ["Use Celsius."],
          1: [{ role: "user", content: "Actually, Rome." }, { role: "developer", content: "Be brief." }]
        }
      })
      assert.strictEqual(run.output, "Rome: 21 degrees.")
      assert.deepStrictEqual(server.requests[0]!.body.messages, [
        { role: "user", content: "Weather in Oslo?" },
        { role: "user", content: "Use Celsius." }
      ])
      const second = server.requests[1]!.body.messages
      assert.deepStrictEqual(second.slice(-2), [
        { role: "user", content: "Actually, Rome." },
        { role: "developer", content: "Be brief." }
      ])
      assert.strictEqual(second[3].role, "tool", "after the previous turn's tool results")
      assert.deepStrictEqual(run.payloads.at(-1)!.turns!.map((t: any) => t.steering), [1, 2])
    }))
})

describe("models", () => {
  it.live("fallback models are used by the failed attempts of a turn, from the last checkpoint", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([
        reply.toolCalls([{ name: "forecast", arguments: { city: "Oslo" } }]),
        reply.error(500),
        reply.error(503),
        reply.error(500),
        reply.text("done")
      ])
      const agent = new Agent({
        name: "fallbacks",
        model: "primary",
        fallbackModels: ["backup-1", "backup-2"],
        tools: [forecast],
        client: client(server.baseURL)
      })
      // Turn 0 succeeds on its third attempt (the task's retries count is 2): the second fallback.
      const first = yield* runTurn(agent, turnContext(agent, { query: "q" }, { retries: 2, attempt: 3 }))
      assert.strictEqual(first._tag, "Continue")
      const payload = yield* storeAndLoad(agent, (first as Extract<TurnOutcome<any>, { _tag: "Continue" }>).payload)
      // Turn 1 counts its attempts from the checkpoint: retries 2, 3, 4 fail; 5 succeeds (back to the primary).
      for (const retries of [2, 3, 4]) {
        const error = yield* Effect.flip(runTurn(agent, turnContext(agent, payload, { turn: 1, retries })))
        assert.strictEqual(classifyFailure(error), "backoff")
      }
      const done = yield* runTurn(agent, turnContext(agent, payload, { turn: 1, retries: 5 }))
      assert.strictEqual(done._tag, "Done")
      assert.deepStrictEqual(server.requests.map((r) => r.body.model), ["backup-2", "primary", "backup-1", "backup-2", "primary"])
      const final = (done as Extract<TurnOutcome<any>, { _tag: "Done" }>).payload
      assert.deepStrictEqual(final.turns.map((t: any) => [t.model, t.attempt, t.retries]), [["backup-2", 2, 2], ["primary", 3, 5]])
    }))

  it.live("instructions, model and settings can be functions of the context", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.text("ok")])
      const MyContext = Schema.Struct({ ...agentContextFields, language: Schema.String, tier: Schema.Literals(["free", "pro"]) })
      const agent = new Agent({
        name: "dynamic",
        contextSchema: MyContext,
        instructions: (c) => Promise.resolve(`Answer in ${c.language}.`),
        model: (c) => (c.tier === "pro" ? "big-model" : "small-model"),
        modelSettings: (c) => ({ temperature: c.tier === "pro" ? 0.7 : 0 }),
        client: client(server.baseURL)
      })
      const run = yield* runToCompletion(agent, { query: "Hi", language: "French", tier: "pro" })
      assert.strictEqual(run.output, "ok")
      const body = server.requests[0]!.body
      assert.strictEqual(body.model, "big-model")
      assert.strictEqual(body.temperature, 0.7)
      assert.deepStrictEqual(body.messages[0], { role: "system", content: "Answer in French." })
      // The user's own fields survive storage.
      assert.strictEqual(run.payloads[0]!.language, "French")
    }))

  it.live("streamed completions give the same turn, and their text reaches the live feed in a few deltas", () =>
    Effect.gen(function*() {
      const script = [
        reply.toolCalls([{ id: "s1", name: "forecast", arguments: { city: "Oslo" } }], { content: "Checking." }),
        reply.text("It is four degrees in Oslo, quite cold.")
      ]
      const plainServer = yield* fakeModel(script)
      const streamServer = yield* fakeModel(script)
      const make = (baseURL: string, stream: boolean) =>
        new Agent({ name: "streamer", model: "m", tools: [forecast], stream, client: client(baseURL) })
      const plain = yield* runToCompletion(make(plainServer.baseURL, false), { query: "q" })
      const streamed = yield* runToCompletion(make(streamServer.baseURL, true), { query: "q" })
      assert.strictEqual(streamed.output, plain.output)
      assert.deepStrictEqual(streamed.payloads.at(-1)!.messages, plain.payloads.at(-1)!.messages)
      assert.deepStrictEqual(
        streamed.payloads.at(-1)!.turns!.map((t: any) => t.usage),
        plain.payloads.at(-1)!.turns!.map((t: any) => t.usage)
      )
      assert.isTrue(streamServer.requests.every((r) => r.body.stream === true))
      // The server streams each reply in many chunks at once: each reply's text comes as one delta.
      const deltas = streamed.events.filter((e) => e.type === "completion_delta").map((e) => (e.data as { text: string }).text)
      assert.deepStrictEqual(deltas, ["Checking.", "It is four degrees in Oslo, quite cold."])
      assert.isFalse(plain.events.some((e) => e.type === "completion_delta"))
    }))
})

describe("textDeltas", () => {
  it("coalesces streamed text: one piece per interval, at once past maxChars, none after discard", async () => {
    const sent: Array<string> = []
    const d = textDeltas((t) => sent.push(t), 60, 10)
    d.push("a")
    await new Promise((r) => setTimeout(r, 20))
    d.push("b")
    assert.deepStrictEqual(sent, [])
    await new Promise((r) => setTimeout(r, 80))
    assert.deepStrictEqual(sent, ["ab"])
    d.push("0123456789") // past maxChars: sent now
    assert.deepStrictEqual(sent, ["ab", "0123456789"])
    d.push("c")
    d.flush()
    d.push("lost")
    d.discard()
    await new Promise((r) => setTimeout(r, 80))
    assert.deepStrictEqual(sent, ["ab", "0123456789", "c"])
  })
})

describe("hooks", () => {
  it.live("run in order; their errors are ignored unless fatal", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.toolCalls([{ name: "forecast", arguments: { city: "Oslo" } }]), reply.text("end")])
      const calls: Array<string> = []
      const agent = new Agent({
        name: "hooked",
        model: "m",
        tools: [forecast],
        client: client(server.baseURL),
        hooks: {
          onRunStart: () => void calls.push("runStart"),
          onTurnStart: (_c, t) => {
            calls.push(`turnStart ${t.turn}`)
            throw new Error("hook bug")
          },
          onTurnEnd: (_c, t, outcome) => Effect.sync(() => void calls.push(`turnEnd ${t.turn} ${outcome._tag}`)),
          onRunEnd: async (_c, _t, end) => void calls.push(`runEnd ${String(end.output)}`)
        }
      })
      const run = yield* runToCompletion(agent, { query: "q" })
      assert.strictEqual(run.output, "end")
      assert.deepStrictEqual(calls, ["runStart", "turnStart 0", "turnEnd 0 Continue", "turnStart 1", "turnEnd 1 Done", "runEnd end"])
    }))

  it.live("a FatalAgentError from a hook fails the task, and onRunEnd is told", () =>
    Effect.gen(function*() {
      const server = yield* fakeModel([reply.text("never sent")])
      const ends: Array<unknown> = []
      const agent = new Agent({
        name: "fatal-hook",
        model: "m",
        client: client(server.baseURL),
        hooks: {
          onTurnStart: () => Effect.fail(new FatalAgentError({ message: "quota exhausted" })),
          onRunEnd: (_c, _t, end) => void ends.push(end.error)
        }
      })
      const error = yield* Effect.flip(runTurn(agent, turnContext(agent, { query: "q" })))
      assert.instanceOf(error, FatalAgentError)
      assert.strictEqual(ends.length, 1)
      assert.strictEqual(ends[0], error)
      assert.strictEqual(server.requests.length, 0, "the model was never called")
    }))
})
