/**
 * Reads an LLM agent's payload back as its conversation: for every turn, the exact messages sent to the
 * model, the model's answer, the tool calls with their arguments, results or errors, timings and usage.
 *
 * Pure, and relies only on the invariants of `AgentContext`: messages are appended, never rewritten,
 * and each turn record says how many of them the turn sent and which system prompt it used.
 */
import type { ChatMessage, TokenUsage, TurnRecord } from "./AgentContext.ts"

export interface ToolCallView {
  readonly id: string
  readonly name: string
  /** The JSON arguments as the model wrote them. */
  readonly arguments: string
  /** The tool message's content sent back to the model. */
  readonly result?: string
  readonly error?: string
  readonly ms: number
}

export interface TurnView {
  readonly turn: number
  readonly model: string
  readonly attempt: number
  readonly startedAt: number
  readonly modelMs: number
  readonly ms: number
  readonly finishReason?: string
  readonly usage?: TokenUsage
  /** Exactly the messages of the request (system prompt first, when there was one). */
  readonly request: ReadonlyArray<ChatMessage>
  /** The steering messages this turn added before the model call (the tail of `request`). */
  readonly steering: ReadonlyArray<ChatMessage>
  /** The model's answer (the assistant message). */
  readonly response: ChatMessage
  readonly toolCalls: ReadonlyArray<ToolCallView>
}

export interface Conversation {
  readonly turns: ReadonlyArray<TurnView>
  /** The whole conversation, after the latest system prompt. */
  readonly messages: ReadonlyArray<ChatMessage>
  readonly output?: unknown
  readonly usage: TokenUsage
}

const contentText = (content: unknown): string =>
  typeof content === "string" ? content : JSON.stringify(content)

export const conversationFromPayload = (payload: {
  readonly messages?: ReadonlyArray<ChatMessage>
  readonly turns?: ReadonlyArray<TurnRecord>
  readonly output?: unknown
}): Conversation => {
  const messages = payload.messages ?? []
  const records = payload.turns ?? []
  let system = ""
  const turns = records.map((r): TurnView => {
    if (r.instructions !== undefined) system = r.instructions
    const sent = messages.slice(0, r.requestMessages)
    const response = messages[r.requestMessages]
    if (response === undefined) throw new Error(`turn ${r.turn}: the payload has no answer at message ${r.requestMessages}`)
    const calls = response.role === "assistant" ? response.tool_calls ?? [] : []
    const after = messages.slice(r.requestMessages + 1)
    return {
      turn: r.turn,
      model: r.model,
      attempt: r.attempt,
      startedAt: r.startedAt,
      modelMs: r.modelMs,
      ms: r.ms,
      ...(r.finishReason !== undefined ? { finishReason: r.finishReason } : {}),
      ...(r.usage !== undefined ? { usage: r.usage } : {}),
      request: system === "" ? sent : [{ role: "system", content: system }, ...sent],
      steering: sent.slice(sent.length - r.steering),
      response,
      toolCalls: r.toolCalls.map((c): ToolCallView => {
        const call = calls.find((x) => x.id === c.id)
        const result = after.find((m) => m.role === "tool" && m.tool_call_id === c.id)
        return {
          id: c.id,
          name: c.name,
          arguments: call?.type === "function" ? call.function.arguments : "",
          ...(result !== undefined ? { result: contentText(result.content) } : {}),
          ...(c.error !== undefined ? { error: c.error } : {}),
          ms: c.ms
        }
      })
    }
  })
  const usage = records.reduce(
    (sum, r) => ({
      promptTokens: sum.promptTokens + (r.usage?.promptTokens ?? 0),
      completionTokens: sum.completionTokens + (r.usage?.completionTokens ?? 0),
      totalTokens: sum.totalTokens + (r.usage?.totalTokens ?? 0)
    }),
    { promptTokens: 0, completionTokens: 0, totalTokens: 0 }
  )
  return { turns, messages, usage, ...("output" in payload ? { output: payload.output } : {}) }
}
