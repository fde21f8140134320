/**
 * The conversation reconstructed from payloads equals, request by request, what the model server received
 * and answered; every checkpoint agrees with the last. A fixed run over HTTP and a fast-check property.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import fc from "fast-check"
import { Agent } from "../../src/agent/Agent.ts"
import type { AgentContext } from "../../src/agent/AgentContext.ts"
import { conversationFromPayload } from "../../src/agent/Conversation.ts"
import { tool } from "../../src/agent/Tool.ts"
import { type Reply, reply, scriptedFetch } from "../support/FakeModelServer.ts"
import { fakeModel, runToCompletion } from "../support/TurnDriver.ts"

const echo = tool({ name: "echo", parameters: Schema.Struct({ text: Schema.String }), execute: ({ text }) => text })
const broken = tool({
  name: "broken",
  parameters: Schema.Struct({}),
  execute: () => Promise.reject(new Error("broken on purpose"))
})

/**
 * The assistant message the fake server answered with, in the form the agent stores it. A stream cannot
 * tell an empty content from none (providers send `""` deltas either way): both are stored as `null`.
 */
const assistantOf = (r: Reply, index: number, stream: boolean): any =>
  r.type === "text"
    ? { role: "assistant", content: r.content }
    : r.type === "tools"
    ? {
      role: "assistant",
      content: stream && r.content === "" ? null : r.content ?? null,
      tool_calls: r.calls.map((c, i) => ({
        id: c.id ?? `call_${index}_${i}`,
        type: "function",
        function: { name: c.name, arguments: typeof c.arguments === "string" ? c.arguments : JSON.stringify(c.arguments) }
      }))
    }
    : undefined

/** Every turn of the final payload equals what the model was sent and answered; every checkpoint agrees. */
const assertReconstructs = (
  payloads: ReadonlyArray<AgentContext>,
  requests: ReadonlyArray<{ readonly body: any }>,
  script: ReadonlyArray<Reply>,
  stream: boolean
) => {
  const conversation = conversationFromPayload(payloads.at(-1)!)
  assert.strictEqual(conversation.turns.length, requests.length)
  conversation.turns.forEach((turn, k) => {
    assert.deepStrictEqual(turn.request, requests[k]!.body.messages, `request of turn ${k}`)
    assert.strictEqual(turn.model, requests[k]!.body.model)
    assert.deepStrictEqual(turn.response, assistantOf(script[k]!, k, stream), `response of turn ${k}`)
    const next = requests[k + 1]?.body.messages ?? []
    for (const call of turn.toolCalls) {
      // What the model was told about each call is what the next request carried.
      const sent = next.find((m: any) => m.role === "tool" && m.tool_call_id === call.id)
      if (sent) assert.strictEqual(call.result, sent.content)
      if (call.error !== undefined) assert.strictEqual(call.result, `Error: ${call.error}`)
    }
  })
  payloads.forEach((p, k) => {
    assert.deepStrictEqual(conversationFromPayload(p).turns, conversation.turns.slice(0, k + 1), `checkpoint ${k}`)
  })
}

describe("conversationFromPayload", () => {
  it.live("reconstructs every model call, answer and tool call from the payloads", () =>
    Effect.gen(function*() {
      const script = [
        reply.toolCalls([
          { id: "a", name: "echo", arguments: { text: "hello" } },
          { id: "b", name: "broken", arguments: {} },
          { id: "c", name: "echo", arguments: { text: 42 } }
        ], { content: "Let me check.", usage: { promptTokens: 10, completionTokens: 5 } }),
        reply.toolCalls([{ id: "d", name: "echo", arguments: { text: "again" } }], { usage: { promptTokens: 30, completionTokens: 2 } }),
        reply.text("All done.", { usage: { promptTokens: 50, completionTokens: 3 } })
      ]
      const server = yield* fakeModel(script)
      const agent = new Agent({
        name: "audited",
        instructions: (_c, t) => (t.turn === 0 ? "Start carefully." : "Keep going."),
        model: "audit-model",
        tools: [echo, broken],
        stream: true,
        client: { baseURL: server.baseURL, apiKey: "test" }
      })
      const run = yield* runToCompletion(agent, { query: "Do it." }, { steering: { 1: ["Hurry up."] } })
      assert.strictEqual(run.output, "All done.")
      assertReconstructs(run.payloads, server.requests, script, true)

      const conversation = conversationFromPayload(run.payloads.at(-1)!)
      assert.deepStrictEqual(conversation.turns.map((t) => t.request[0]), [
        { role: "system", content: "Start carefully." },
        { role: "system", content: "Keep going." },
        { role: "system", content: "Keep going." }
      ])
      // The system prompt is stored only when it changes.
      assert.deepStrictEqual(run.payloads.at(-1)!.turns!.map((t: any) => t.instructions), ["Start carefully.", "Keep going.", undefined])
      assert.deepStrictEqual(conversation.turns[1]!.steering, [{ role: "user", content: "Hurry up." }])
      assert.deepStrictEqual(
        conversation.turns[0]!.toolCalls.map((c) => [c.name, c.arguments, c.result, c.error]),
        [
          ["echo", `{"text":"hello"}`, "hello", undefined],
          ["broken", "{}", "Error: broken on purpose", "broken on purpose"],
          ["echo", `{"text":42}`, `Error: invalid arguments: Expected string\n  at ["text"]`, `invalid arguments: Expected string\n  at ["text"]`]
        ]
      )
      assert.deepStrictEqual(conversation.usage, { promptTokens: 90, completionTokens: 10, totalTokens: 100 })
      assert.strictEqual(conversation.output, "All done.")
      assert.deepStrictEqual(conversation.turns.map((t) => t.finishReason), ["tool_calls", "tool_calls", "stop"])
      assert.isTrue(conversation.turns.every((t) => t.ms >= t.modelMs && t.startedAt > 0))
    }))

  it("reconstructs any run exactly (property, over the scripted fetch)", async () => {
    const call = fc.oneof(
      fc.record({ name: fc.constant("echo"), arguments: fc.record({ text: fc.string({ maxLength: 12 }) }) }),
      fc.record({ name: fc.constant("echo"), arguments: fc.constantFrom("{bad json", `{"text": 1}`) }),
      fc.record({ name: fc.constant("broken"), arguments: fc.constant({}) }),
      fc.record({ name: fc.constant("missing"), arguments: fc.constant({}) })
    )
    const toolTurn = fc.record({
      calls: fc.array(call, { minLength: 1, maxLength: 3 }),
      content: fc.option(fc.string({ maxLength: 20 }), { nil: null })
    }).map(({ calls, content }) => reply.toolCalls(calls, { content }))
    const arbitrary = fc.record({
      turns: fc.array(toolTurn, { maxLength: 5 }),
      answer: fc.string({ minLength: 1, maxLength: 30 }),
      steering: fc.array(fc.array(fc.oneof(fc.string({ maxLength: 10 }), fc.constant({ role: "user", content: "obj" })), { maxLength: 2 }), {
        minLength: 6,
        maxLength: 6
      }),
      switchAt: fc.nat(6),
      stream: fc.boolean(),
      history: fc.array(fc.constantFrom({ role: "user", content: "earlier" }, { role: "assistant", content: "reply" }), { maxLength: 2 })
    })
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ answer, history, steering, stream, switchAt, turns }) => {
        const script = [...turns, reply.text(answer)]
        const fake = scriptedFetch(script)
        const agent = new Agent({
          name: "property",
          instructions: (_c, t) => (t.turn < switchAt ? "first prompt" : ""),
          model: (_c, t) => `model-${t.turn}`,
          tools: [echo, broken],
          stream,
          client: { baseURL: "http://fake.invalid/v1", apiKey: "test", fetch: fake.fetch }
        })
        const run = await Effect.runPromise(
          runToCompletion(agent, { query: "go", messages: history }, { steering: Object.fromEntries(steering.entries()) })
        )
        assert.strictEqual(run.output, answer)
        assertReconstructs(run.payloads, fake.requests, script, stream)
      }),
      { numRuns: 60 }
    )
  })
})
