/**
 * The LLM agent runtime's public surface: `Agent`, `tool`, the `AgentContext` payload, the model client
 * options and `conversationFromPayload`. Re-exports only; nothing is defined here.
 */
export { Agent, type AgentHooks, type Dynamic, type LlmAgentOptions, type ModelSettings } from "./Agent.ts"
export { AgentContext, agentContextFields, ChatMessage, type TokenUsage, ToolCallRecord, TurnRecord } from "./AgentContext.ts"
export { type Conversation, conversationFromPayload, type ToolCallView, type TurnView } from "./Conversation.ts"
export { FINAL_OUTPUT } from "./FinalOutput.ts"
export { InvalidModelOutput, makeOpenAI, type ModelClientOptions, type Provider, providers } from "./ModelClient.ts"
export {
  deferred,
  type PendingOptions,
  type PendingToolResult,
  type Tool,
  ToolArgumentsError,
  type ToolContext,
  type ToolOptions,
  tool,
  waitForChildren
} from "./Tool.ts"
