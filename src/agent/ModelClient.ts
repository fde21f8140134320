/**
 * The model client: one OpenAI-compatible chat completion (the `openai` package, any base URL), plain or
 * streamed, as an interruptible Effect, with its failures classified for the task's retry rules.
 *
 * Invariants: the SDK never retries on its own (`maxRetries: 0`; retries are the orchestrator's, one per
 * attempt, recorded in the history); interrupting the Effect or aborting the turn's signal aborts the
 * HTTP request; every failure is a `TransientAgentError` (429, 408, 409, 5xx, connection, timeout),
 * a `FatalAgentError` (other 4xx, missing credentials) or an `InvalidModelOutput` (retried at once).
 */
import OpenAI from "openai"
import type {
  ChatCompletionChunk,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageFunctionToolCall
} from "openai/resources/chat/completions"
import { Effect, Schema } from "effect"
import { FatalAgentError, TransientAgentError } from "../AgentErrors.ts"
import type { TokenUsage } from "./AgentContext.ts"

/** OpenAI-compatible endpoints by name, with the environment variable that holds their key. */
export const providers = {
  openai: { baseURL: "https://api.openai.com/v1", apiKeyEnv: "OPENAI_API_KEY" },
  xai: { baseURL: "https://api.x.ai/v1", apiKeyEnv: "XAI_API_KEY" },
  anthropic: { baseURL: "https://api.anthropic.com/v1", apiKeyEnv: "ANTHROPIC_API_KEY" },
  fireworks: { baseURL: "https://api.fireworks.ai/inference/v1", apiKeyEnv: "FIREWORKS_API_KEY" },
  aiGateway: { baseURL: "https://ai-gateway.vercel.sh/v1", apiKeyEnv: "AI_GATEWAY_API_KEY" },
  openrouter: { baseURL: "https://openrouter.ai/api/v1", apiKeyEnv: "OPENROUTER_API_KEY" },
  ollama: { baseURL: "http://127.0.0.1:11434/v1", apiKeyEnv: "OLLAMA_API_KEY" }
} as const
export type Provider = keyof typeof providers

export interface ModelClientOptions {
  /** A named endpoint; `baseURL` and `apiKey` override it. Default: `openai`. */
  readonly provider?: Provider
  readonly baseURL?: string
  /** Default: the provider's environment variable (`OPENAI_API_KEY` for OpenAI). */
  readonly apiKey?: string
  /** Per request, in ms. Default: the SDK's (10 minutes); the worker's turn timeout usually comes first. */
  readonly timeoutMs?: number
  /** A fetch implementation (e.g. a scripted one for demos without network). */
  readonly fetch?: typeof globalThis.fetch
}

/** The model's answer has a shape we cannot use (e.g. a final output that does not validate on the last turn). */
export class InvalidModelOutput extends Schema.TaggedError<InvalidModelOutput>()("InvalidModelOutput", {
  message: Schema.String
}) {}

/** An openai client for these options; the SDK's own retries are off. Throws when no API key is found. */
export const makeOpenAI = (options: ModelClientOptions = {}): OpenAI => {
  const provider = providers[options.provider ?? "openai"]
  const apiKey = options.apiKey ?? process.env[provider.apiKeyEnv] ??
    (options.provider === "ollama" ? "ollama" : undefined)
  return new OpenAI({
    baseURL: options.baseURL ?? provider.baseURL,
    ...(apiKey !== undefined ? { apiKey } : {}),
    maxRetries: 0,
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
    ...(options.fetch !== undefined ? { fetch: options.fetch } : {})
  })
}

/** The parts of a completion a turn uses, the same whether streamed or not. */
export interface ModelReply {
  readonly content: string | null
  readonly refusal: string | null
  readonly toolCalls: ReadonlyArray<ChatCompletionMessageFunctionToolCall>
  readonly finishReason: string | null
  readonly usage?: TokenUsage
}

/** A server-given delay: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date. */
export const retryAfterMs = (headers: Headers | undefined, now = Date.now()): number | undefined => {
  const ms = headers?.get("retry-after-ms")
  if (ms && Number.isFinite(Number(ms))) return Math.max(0, Number(ms))
  const value = headers?.get("retry-after")
  if (!value) return undefined
  if (Number.isFinite(Number(value))) return Math.max(0, Number(value) * 1000)
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** Puts a failed model call in its retry class. */
export const classifyModelError = (error: unknown): FatalAgentError | TransientAgentError | InvalidModelOutput => {
  if (error instanceof OpenAI.APIConnectionError) {
    // Includes APIConnectionTimeoutError: the request may not have reached the provider.
    return new TransientAgentError({ message: `model connection failed: ${error.message}` })
  }
  if (error instanceof OpenAI.APIError && typeof error.status === "number") {
    const status = error.status
    const message = `model request failed (${status}): ${error.message}`
    if (status === 408 || status === 409 || status === 429 || status >= 500) {
      const delay = retryAfterMs(error.headers)
      return new TransientAgentError({ message, ...(delay !== undefined ? { retryAfterMs: delay } : {}) })
    }
    return new FatalAgentError({ message })
  }
  if (error instanceof OpenAI.OpenAIError && /credentials|api key/i.test(error.message)) {
    return new FatalAgentError({ message: error.message })
  }
  // Malformed bodies, broken streams and the like: the next attempt may well succeed.
  return new InvalidModelOutput({ message: `unusable model response: ${error instanceof Error ? error.message : String(error)}` })
}

const toUsage = (u: OpenAI.CompletionUsage | null | undefined): TokenUsage | undefined =>
  u ? { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens, totalTokens: u.total_tokens } : undefined

const functionCalls = (calls: ReadonlyArray<OpenAI.Chat.ChatCompletionMessageToolCall> | undefined) =>
  (calls ?? []).filter((c): c is ChatCompletionMessageFunctionToolCall => c.type === "function")

/** Folds streamed chunks into the reply a non-streamed call would have given. */
const accumulate = async (
  stream: AsyncIterable<ChatCompletionChunk>,
  onChunk: (chunk: ChatCompletionChunk) => void
): Promise<ModelReply> => {
  let content: string | null = null
  let refusal: string | null = null
  let finishReason: string | null = null
  let usage: TokenUsage | undefined
  const calls: Array<{ id: string; name: string; arguments: string }> = []
  for await (const chunk of stream) {
    onChunk(chunk)
    usage = toUsage(chunk.usage) ?? usage
    const choice = chunk.choices[0]
    if (!choice) continue
    if (choice.delta.content) content = (content ?? "") + choice.delta.content
    if (choice.delta.refusal) refusal = (refusal ?? "") + choice.delta.refusal
    for (const d of choice.delta.tool_calls ?? []) {
      const call = (calls[d.index] ??= { id: "", name: "", arguments: "" })
      if (d.id) call.id = d.id
      if (d.function?.name) call.name += d.function.name
      if (d.function?.arguments) call.arguments += d.function.arguments
    }
    if (choice.finish_reason) finishReason = choice.finish_reason
  }
  return {
    content,
    refusal,
    toolCalls: calls.filter((c) => c !== undefined).map((c) => ({
      id: c.id,
      type: "function" as const,
      function: { name: c.name, arguments: c.arguments }
    })),
    finishReason,
    ...(usage ? { usage } : {})
  }
}

/**
 * One chat completion. `signal` is the turn's: aborting it (or interrupting the Effect) aborts the request,
 * and the Effect is then interrupted. With `onChunk`, the completion is streamed and each chunk passed on.
 */
export const createCompletion = (
  client: OpenAI,
  params: ChatCompletionCreateParamsNonStreaming,
  options: { readonly signal: AbortSignal; readonly onChunk?: ((chunk: ChatCompletionChunk) => void) | undefined }
): Effect.Effect<ModelReply, FatalAgentError | TransientAgentError | InvalidModelOutput> =>
  Effect.tryPromise({
    try: async (interrupted): Promise<ModelReply> => {
      const request = { signal: AbortSignal.any([options.signal, interrupted]), maxRetries: 0 }
      if (options.onChunk) {
        const stream = await client.chat.completions.create(
          { ...params, stream: true, stream_options: { include_usage: true } },
          request
        )
        return await accumulate(stream, options.onChunk)
      }
      const completion = await client.chat.completions.create(params, request)
      const choice = completion.choices[0]
      if (!choice) throw new Error("the completion has no choices")
      return {
        content: choice.message.content,
        refusal: choice.message.refusal ?? null,
        toolCalls: functionCalls(choice.message.tool_calls),
        finishReason: choice.finish_reason,
        ...(completion.usage ? { usage: toUsage(completion.usage)! } : {})
      }
    },
    catch: (error) => error
  }).pipe(
    Effect.catch((error) => options.signal.aborted ? Effect.interrupt : Effect.fail(classifyModelError(error)))
  )
