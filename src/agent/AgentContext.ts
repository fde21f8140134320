/**
 * The payload of an LLM agent's task: the query, the conversation so far and one record per completed
 * turn (model, timings, token usage, tool calls). The worker checkpoints it after every turn, so the
 * task's history holds every state of the conversation.
 *
 * Invariants: `messages` only grows by appending (never rewritten), and `turns[k].requestMessages`
 * messages of it, after the system prompt, are exactly what turn k sent to the model; the system
 * prompt is stored in a turn record only when it differs from the previous one. Extra fields are kept.
 */
import type { ChatCompletionMessageParam } from "openai/resources/chat/completions"
import { Schema } from "effect"

/** One OpenAI chat message as stored (the request form: system, user, assistant, tool …). */
export type ChatMessage = ChatCompletionMessageParam

export const ChatMessage = Schema.declare<ChatMessage>(
  (u): u is ChatMessage =>
    typeof u === "object" && u !== null && !Array.isArray(u) && typeof (u as { role?: unknown }).role === "string",
  { title: "ChatMessage", description: "an OpenAI chat message ({ role, content, … })" }
)

export const TokenUsage = Schema.Struct({
  promptTokens: Schema.Number,
  completionTokens: Schema.Number,
  totalTokens: Schema.Number
})
export type TokenUsage = typeof TokenUsage.Type

/** A tool call of a turn; its arguments are in the assistant message, its result in the tool message. */
export const ToolCallRecord = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  ms: Schema.Number,
  /** Present when the call failed (bad arguments, unknown tool, the tool threw …). */
  error: Schema.optionalKey(Schema.String),
  /** The call answers later: a deferred result, or child tasks; its tool message comes with the next turn. */
  pending: Schema.optionalKey(Schema.Literals(["result", "children"]))
})
export type ToolCallRecord = typeof ToolCallRecord.Type

/** What one completed turn did, beside the messages it appended. */
export const TurnRecord = Schema.Struct({
  /** The task's turn number (0-based). */
  turn: Schema.Int,
  /** The model that was asked. */
  model: Schema.String,
  /** Failed attempts of this turn before the one that completed it (selects a fallback model). */
  attempt: Schema.Int,
  /** The task's failed attempts so far when this turn completed. */
  retries: Schema.Int,
  /** The system prompt sent, when it differs from the previous turn's ("" = none). */
  instructions: Schema.optionalKey(Schema.String),
  /** How many of `messages` (after the system prompt) were sent to the model. */
  requestMessages: Schema.Int,
  /** Steering messages appended before the model call. */
  steering: Schema.Int,
  startedAt: Schema.Number,
  /** Duration of the model call. */
  modelMs: Schema.Number,
  /** Duration of the whole turn (model call and tools). */
  ms: Schema.Number,
  finishReason: Schema.optionalKey(Schema.String),
  usage: Schema.optionalKey(TokenUsage),
  toolCalls: Schema.Array(ToolCallRecord)
})
export type TurnRecord = typeof TurnRecord.Type

/** The fields every LLM agent context has; spread them into your own `contextSchema`. */
export const agentContextFields = {
  query: Schema.String,
  messages: Schema.optionalKey(Schema.Array(ChatMessage)),
  /** Completed turns. */
  turn: Schema.optionalKey(Schema.Int),
  /** The final output, set by the last turn. */
  output: Schema.optionalKey(Schema.Unknown),
  /** Failed attempts of the current turn (0 on a first try). */
  attempt: Schema.optionalKey(Schema.Int),
  turns: Schema.optionalKey(Schema.Array(TurnRecord)),
  /** Tool calls the last turn left waiting (deferred results, child tasks): answered when the task resumes. */
  pendingTools: Schema.optionalKey(Schema.Array(Schema.Struct({
    toolCallId: Schema.String,
    resultId: Schema.String,
    kind: Schema.Literals(["result", "children"]),
    children: Schema.optionalKey(Schema.Array(Schema.String))
  })))
}

/** The default payload of an LLM agent: `{ query }` at least; any extra field is kept. */
export const AgentContext = Schema.StructWithRest(Schema.Struct(agentContextFields), [
  Schema.Record(Schema.String, Schema.Unknown)
])

/** Any payload an LLM agent can run on: the fields above, and any other. */
export type AgentContext = typeof AgentContext.Type
