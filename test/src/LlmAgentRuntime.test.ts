/**
 * The LLM agent through the real worker and Redis, against the local OpenAI-compatible server via the
 * real openai client: a multi-turn run with tools to a structured output; the whole conversation —
 * including the final turn — is reconstructed from the task's history alone and equals what the model
 * server received; a 429 backs off and a 400 fails the task; cancel aborts a slow model call; a deferred
 * tool (a human's approval, delivered through the API) and a forking tool (child tasks of another agent)
 * make the turn wait, and the next turn answers both calls before asking the model again.
 */
import { Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Agent, conversationFromPayload, deferred, tool, waitForChildren } from "../../src/agent/index.ts"
import { defineAgent, Done } from "../../src/Agent.ts"
import { Audit } from "../../src/audit/Audit.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { type FakeModelServer, reply, startFakeModelServer } from "../support/FakeModelServer.ts"
import { freshKeyspace, testRedisOptions } from "../support/TestRedis.ts"

let model: FakeModelServer
let orchestrator: Orchestrator
const lookup = tool({
  name: "lookup",
  description: "Looks a word up",
  parameters: Schema.Struct({ word: Schema.String }),
  execute: async ({ word }) => `${word}: a thing`
})
const outputType = Schema.Struct({ answer: Schema.String })
const agentOf = (name: string) =>
  new Agent({
    name,
    instructions: "Answer with the tools.",
    model: "test-model",
    tools: [lookup],
    outputType,
    maxTurns: 4,
    client: { baseURL: `${model.baseURL}`, apiKey: "test" }
  })

const waitFor = async <A>(f: () => Promise<A>, ok: (a: A) => boolean, ms = 15_000): Promise<A> => {
  const end = Date.now() + ms
  for (;;) {
    const a = await f()
    if (ok(a)) return a
    if (Date.now() > end) throw new Error(`timed out; last ${JSON.stringify(a)}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

beforeAll(async () => {
  model = await startFakeModelServer([])
})
afterAll(async () => {
  await orchestrator?.stop()
  await model.close()
})

describe("LLM agent on the runtime", () => {
  it("runs tools over several turns to a structured output; the history holds the whole conversation", async () => {
    const agent = agentOf("llm-ok")
    orchestrator = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
    orchestrator.registerRunner({
      agent,
      agentWorkerConfig: new AgentWorkerConfig({ workers: 2, backoffBase: 0.05, backoffMax: 0.1 }),
      maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: 0.1 })
    })
    model.push(
      reply.toolCalls([{ id: "c1", name: "lookup", arguments: { word: "apple" } }]),
      reply.error(429, { retryAfter: "0" }),
      reply.toolCalls([{ id: "c2", name: "lookup", arguments: { word: 7 } }]), // bad arguments → tool error
      reply.finalOutput({ answer: "an apple is a thing" })
    )
    await orchestrator.start()
    const id = await orchestrator.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "what is an apple?" } }))
    const data = await waitFor(() => orchestrator.getTaskData(id), (d) => d?.status === "completed" || d?.status === "failed")
    expect(data?.status).toBe("completed")
    expect(data?.output).toEqual({ answer: "an apple is a thing" })

    const history = await orchestrator.getTaskHistory(id)
    const tags = history.map((e) => e.event._tag)
    expect(tags.filter((t) => t === "TaskFailed")).toHaveLength(1) // the 429
    const failed = history.find((e) => e.event._tag === "TaskFailed")!.event as { decision: string; error: { kind: string } }
    expect(failed).toMatchObject({ decision: "backoff", error: { kind: "TransientAgentError" } })

    // The conversation, from the history alone: its fold. By default each turn's checkpoint records only what
    // the turn appended to the conversation (ADR 0018), the final one riding on TaskCompleted.
    expect(history.at(-1)!.event._tag).toBe("TaskCompleted")
    expect(history.filter((e) => "payloadDelta" in e.event).length).toBeGreaterThanOrEqual(2)
    const replay = await new Audit(orchestrator).replayTask(id)
    const conversation = conversationFromPayload(replay.state!.payload as never)
    // Request 1 was answered with the 429; its retry (request 2) carried the same conversation.
    expect(model.requests[2]!.body).toEqual(model.requests[1]!.body)
    const answered = model.requests.filter((_, i) => i !== 1)
    expect(conversation.turns.map((t) => t.request)).toEqual(answered.map((r) => (r.body as { messages: unknown }).messages))
    expect(conversation.turns[1]!.toolCalls[0]!.error).toMatch(/word/)
  })

  it("a deferred tool and a forking tool make the turn wait; the next turn answers both calls", async () => {
    const tokens: Array<string> = []
    const askHuman = tool({
      name: "ask_human",
      description: "Asks a human to approve",
      parameters: Schema.Struct({ question: Schema.String }),
      // A real tool would send the question and ctx.resultToken to the human (an approval link).
      execute: (_args, ctx) => {
        tokens.push(ctx.resultToken)
        return deferred({ timeout: 60 })
      }
    })
    const doubler = defineAgent<{ n: number }>({ name: "doubler", turn: (ctx) => Promise.resolve(Done(ctx.payload.n * 2)) })
    const fanOut = tool({
      name: "double_all",
      description: "Doubles numbers in sub-tasks",
      parameters: Schema.Struct({ numbers: Schema.Array(Schema.Number) }),
      execute: async ({ numbers }, ctx) =>
        waitForChildren(await ctx.spawn(numbers.map((n) => ({ agent: doubler, payload: { n } }))))
    })
    const agent = new Agent({
      name: "llm-waits",
      model: "test-model",
      tools: [askHuman, fanOut],
      client: { baseURL: `${model.baseURL}`, apiKey: "test" }
    })
    const o = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
    o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
    o.registerRunner({ agent: doubler, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
    const before = model.requests.length
    model.push(
      reply.toolCalls([
        { id: "call_ask", name: "ask_human", arguments: { question: "ship it?" } },
        { id: "call_fan", name: "double_all", arguments: { numbers: [1, 2] } }
      ]),
      reply.text("approved, and the doubles are 2 and 4")
    )
    await o.start()
    try {
      const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "go" } }))
      const waiting = await waitFor(() => o.getTaskData(id), (d) => d?.status === "waiting")
      expect(waiting?.waitingFor?.some((i) => i.id === "call_ask" && i.token === tokens[0])).toBe(true)
      // The children end on their own; the human's answer comes through the API, once.
      await o.completeDeferredTool(id, "call_ask", { approved: true }, { token: tokens[0]! })
      const data = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed" || d?.status === "failed")
      expect(data?.output).toBe("approved, and the doubles are 2 and 4")

      const second = model.requests[before + 1]!.body as { messages: Array<{ role: string; tool_call_id?: string; content: string }> }
      const toolMessages = second.messages.filter((m) => m.role === "tool")
      expect(toolMessages.map((m) => m.tool_call_id)).toEqual(["call_ask", "call_fan"])
      expect(JSON.parse(toolMessages[0]!.content)).toEqual({ approved: true })
      const children = JSON.parse(toolMessages[1]!.content) as Array<{ status: string; output: number; agent: string }>
      expect(children.map((c) => [c.agent, c.status, c.output])).toEqual([["doubler", "completed", 2], ["doubler", "completed", 4]])
      // The tool messages directly follow the assistant message that called the tools.
      const assistant = second.messages.findIndex((m) => m.role === "assistant")
      expect(second.messages.slice(assistant + 1).map((m) => m.role)).toEqual(["tool", "tool"])

      const last = (await o.getTaskHistory(id)).at(-1)!.event as { payload?: unknown }
      const conversation = conversationFromPayload(last.payload as never)
      expect(conversation.turns[0]!.toolCalls.map((c) => c.result !== undefined)).toEqual([true, true])
      expect(conversation.turns.map((t) => t.request)).toEqual(
        model.requests.slice(before, before + 2).map((r) => (r.body as { messages: unknown }).messages)
      )
    } finally {
      await o.stop()
    }
  })

  it("fails at once on a 400, and cancel aborts a slow model call", async () => {
    const agent = agentOf("llm-bad")
    const o = new Orchestrator({ ...testRedisOptions, ...freshKeyspace() })
    o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 1, heartbeatInterval: 30 }) })
    const before = model.requests.length
    model.push(reply.error(400, { message: "bad request" }), reply.text("too late", { delayMs: 20_000 }))
    await o.start()
    try {
      const bad = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "x" } }))
      const failed = await waitFor(() => o.getTaskData(bad), (d) => d?.status === "failed")
      expect(failed?.error?.kind).toBe("FatalAgentError")
      expect(failed?.retries).toBe(0)

      const slow = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "y" } }))
      await waitFor(async () => model.requests.length, (n) => n >= before + 2)
      await o.cancelTask(slow)
      await waitFor(() => o.getTaskStatus(slow), (s) => s === "cancelled", 5_000)
      await waitFor(async () => model.requests.at(-1)!.abortedAt, (t) => t !== undefined, 5_000)
    } finally {
      await o.stop()
    }
  })
})
