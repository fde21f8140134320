/**
 * The LLM agent: instructions, tools, a model and an optional structured output, run one turn per pickup
 * like any agent (`BaseAgent`). A turn sends the conversation to the model, appends its answer, runs the
 * tool calls it asked for (concurrently) and continues, or is done when the model gives a final answer.
 *
 * Invariants: a turn only appends to `payload.messages` and `payload.turns`, so the history of payloads
 * reconstructs every model call exactly (`Conversation.ts`); the turn at `maxTurns - 1` ends the task
 * or fails the attempt, never continues; a `FatalAgentError` from a tool or hook fails the task, any
 * other tool error goes back to the model.
 *
 * A tool that answers later (`deferred()`, `waitForChildren(ids)`) makes the turn end waiting; the calls it
 * left open are kept in `payload.pendingTools`, and the next turn first appends their tool messages (from
 * `ctx.results`: the delivered result, the children's outputs or errors, or a timeout) right after the ones
 * already there, so every tool call is still answered before the model is asked again.
 */
import type OpenAI from "openai"
import type { ChatCompletionChunk, ChatCompletionCreateParamsNonStreaming, ChatCompletionToolChoiceOption } from "openai/resources/chat/completions"
import { Clock, Effect, Schema } from "effect"
import { type ApiKeys, BaseAgent, Continue, type DeliveredResult, Done, type TurnContext, type TurnOutcome, Wait } from "../Agent.ts"
import { FatalAgentError } from "../AgentErrors.ts"
import { InvalidConfig } from "../Errors.ts"
import { AgentContext, ChatMessage, type ToolCallRecord, type TurnRecord } from "./AgentContext.ts"
import { FINAL_OUTPUT, finalOutput } from "./FinalOutput.ts"
import {
  createCompletion,
  InvalidModelOutput,
  makeOpenAI,
  type ModelClientOptions,
  type ModelReply
} from "./ModelClient.ts"
import { fromReturned, type PendingCall, resultText, type Returned, runToolCall, type Tool } from "./Tool.ts"

/** A setting given as a value or computed from the context at every turn. */
export type Dynamic<T, C> = T | ((context: C, turn: TurnContext<C>) => T)

export interface ModelSettings {
  readonly temperature?: number
  readonly toolChoice?: "auto" | "none" | "required" | { readonly name: string }
  readonly parallelToolCalls?: boolean
  readonly maxCompletionTokens?: number
}

/**
 * Lifecycle hooks. They may return a value, a promise or an Effect. Their errors are logged and ignored,
 * except a `FatalAgentError`, which fails the task.
 */
export interface AgentHooks<C> {
  /** The first attempt of the first turn. */
  readonly onRunStart?: (context: C, turn: TurnContext<C>) => Returned<void>
  readonly onTurnStart?: (context: C, turn: TurnContext<C>) => Returned<void>
  readonly onTurnEnd?: (context: C, turn: TurnContext<C>, outcome: TurnOutcome<C>) => Returned<void>
  /** The task's final answer, or a fatal error (other failures may still be retried). */
  readonly onRunEnd?: (
    context: C,
    turn: TurnContext<C>,
    end: { readonly output?: unknown; readonly error?: unknown }
  ) => Returned<void>
  /** The running turn was interrupted: cancel, lost lease, timeout or shutdown (`reason` is the signal's). */
  readonly onRunCancelled?: (context: C, turn: TurnContext<C>, reason: unknown) => Returned<void>
}

export interface LlmAgentOptions<C extends AgentContext, O> {
  readonly name: string
  readonly description?: string
  /** The system prompt. */
  readonly instructions?: Dynamic<Returned<string>, C>
  readonly tools?: ReadonlyArray<Tool<C>>
  readonly model: Dynamic<string, C>
  /** Models for the failed attempts of a turn: attempt n uses `[model, ...fallbackModels][n % length]`. */
  readonly fallbackModels?: ReadonlyArray<string>
  readonly modelSettings?: Dynamic<ModelSettings, C>
  /** The turn `maxTurns - 1` must give the final answer (tool choice forced), or the attempt fails. */
  readonly maxTurns?: number
  /** A structured final output, given through the `final_output` tool and validated. Default: the text answer. */
  readonly outputType?: Schema.Codec<O, unknown>
  /** Your own context: a Schema of `AgentContext`'s fields and more (`agentContextFields`). */
  readonly contextSchema?: Schema.Codec<C, unknown>
  readonly hooks?: AgentHooks<C>
  /**
   * An openai client, or how to make one. Default: OpenAI with the running orchestrator's `openaiApiKey`, else
   * `OPENAI_API_KEY`. Options without an `apiKey` take the orchestrator's key of their provider (openai, xai).
   */
  readonly client?: OpenAI | ModelClientOptions
  /**
   * Stream completions; the reply's text goes to the live feed as it comes, as `completion_delta` events
   * `{ text }` (the text since the last one, at most one per 100 ms).
   */
  readonly stream?: boolean
}

/**
 * Collects streamed text and hands it on in pieces: the first piece `intervalMs` after the text starts, then
 * at most one per interval (or at once past `maxChars`, so each stays well under the emit size limit).
 * A streamed reply costs a few live events per second rather than one per token.
 */
export const textDeltas = (send: (text: string) => void, intervalMs = 100, maxChars = 2048) => {
  let buffer = ""
  let timer: ReturnType<typeof setTimeout> | undefined
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    if (buffer === "") return
    const text = buffer
    buffer = ""
    send(text)
  }
  return {
    push: (text: string) => {
      buffer += text
      if (buffer.length >= maxChars) flush()
      else timer ??= setTimeout(flush, intervalMs)
    },
    /** Sends what is left (the reply is complete). */
    flush,
    /** Drops what is left (the call failed or was interrupted). */
    discard: () => {
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      buffer = ""
    }
  }
}

const resolve = <T, C>(value: Dynamic<T, C>, context: C, turn: TurnContext<C>): T =>
  typeof value === "function" ? (value as (c: C, t: TurnContext<C>) => T)(context, turn) : value

const isChatMessage = Schema.is(ChatMessage)

/** A steering message as the model sees it: text is a user message, a chat message is kept as is. */
const steeringMessage = (m: unknown): ChatMessage =>
  typeof m === "string"
    ? { role: "user", content: m }
    : isChatMessage(m)
    ? m
    : { role: "user", content: JSON.stringify(m) }

const toolChoiceParam = (choice: NonNullable<ModelSettings["toolChoice"]>): ChatCompletionToolChoiceOption =>
  typeof choice === "string" ? choice : { type: "function", function: { name: choice.name } }

const assistantMessage = (reply: ModelReply): ChatMessage => ({
  role: "assistant",
  content: reply.content,
  ...(reply.refusal ? { refusal: reply.refusal } : {}),
  ...(reply.toolCalls.length > 0 ? { tool_calls: [...reply.toolCalls] } : {})
})

/** The tool message of a call that waited, from what arrived for it (in the order of the wait). */
const resumedToolMessage = (
  pending: NonNullable<AgentContext["pendingTools"]>[number],
  results: ReadonlyArray<DeliveredResult>
): ChatMessage => {
  const byId = new Map(results.map((r) => [r.id, r]))
  if (pending.kind === "result") {
    const r = byId.get(pending.resultId)
    const content = r === undefined
      ? "Error: no result arrived"
      : "timedOut" in r
      ? "Error: timed out waiting for the result"
      : "result" in r
      ? resultText(r.result)
      : resultText(r)
    return { role: "tool", tool_call_id: pending.toolCallId, content }
  }
  const children = (pending.children ?? []).map((id) => {
    const r = byId.get(id)
    if (r === undefined) return { task: id, status: "unknown" }
    if ("timedOut" in r) return { task: id, status: "timedOut" }
    if (r.kind !== "child") return { task: id, status: "unknown" }
    return {
      task: id,
      agent: r.agent,
      status: r.status,
      ...(r.output !== undefined ? { output: r.output } : {}),
      ...(r.error !== undefined ? { error: r.error.message } : {})
    }
  })
  return { role: "tool", tool_call_id: pending.toolCallId, content: JSON.stringify(children) }
}

/** What the turn waits for, for the calls it leaves open. */
const waitSpecs = (pending: ReadonlyArray<PendingCall>) =>
  pending.flatMap((p) => {
    const timing = { ...(p.timeout !== undefined ? { timeout: p.timeout } : {}), ...(p.onTimeout !== undefined ? { onTimeout: p.onTimeout } : {}) }
    return p.kind === "result"
      ? [{ id: p.resultId, token: p.token, ...timing }]
      : (p.children ?? []).map((id) => ({ id, ...timing }))
  })

/** The system prompt of the latest turn record that has one. */
const lastInstructions = (records: ReadonlyArray<TurnRecord>): string | undefined =>
  records.findLast((r) => r.instructions !== undefined)?.instructions

export class Agent<C extends AgentContext = AgentContext, O = string> extends BaseAgent<C> {
  readonly tools: ReadonlyArray<Tool<C>>
  readonly maxTurns: number | undefined
  readonly outputType: Schema.Codec<O, unknown> | undefined

  constructor(options: LlmAgentOptions<C, O>) {
    const maxTurns = options.maxTurns
    if (maxTurns !== undefined && !(Number.isInteger(maxTurns) && maxTurns >= 1)) {
      throw new InvalidConfig({ message: `maxTurns must be an integer >= 1, got ${maxTurns}` })
    }
    const tools = options.tools ?? []
    const byName = new Map(tools.map((t) => [t.name, t]))
    if (byName.size !== tools.length || byName.has(FINAL_OUTPUT)) {
      throw new InvalidConfig({ message: `agent ${options.name}: tool names must be unique and not ${FINAL_OUTPUT}` })
    }
    const final = options.outputType ? finalOutput(options.outputType) : undefined
    const definitions = [...tools.map((t) => t.definition), ...(final ? [final.definition] : [])]
    // One client per key it was made with: the agent's own, else the running orchestrator's for the provider
    // (`TurnContext.apiKeys`), else the provider's environment variable (makeOpenAI).
    const clients = new Map<string | undefined, OpenAI>()
    const getClient = (apiKeys: ApiKeys | undefined) =>
      Effect.try({
        try: () => {
          const given = options.client
          if (given !== undefined && "chat" in given) return given
          const provider = given?.provider ?? "openai"
          const apiKey = given?.apiKey ?? (provider === "openai" || provider === "xai" ? apiKeys?.[provider] : undefined)
          let client = clients.get(apiKey)
          if (client === undefined) {
            client = makeOpenAI({ ...given, ...(apiKey === undefined ? {} : { apiKey }) })
            clients.set(apiKey, client)
          }
          return client
        },
        catch: (e) => new FatalAgentError({ message: `cannot make the model client: ${(e as Error).message}` })
      })
    const hooks = options.hooks ?? {}
    const runHook = (name: keyof AgentHooks<C>, run: (() => Returned<void>) | undefined) =>
      run === undefined ? Effect.void : fromReturned(run).pipe(
        Effect.catch((e) =>
          e instanceof FatalAgentError ? Effect.fail(e) : Effect.logWarning(`hook ${name} of agent ${options.name} failed`, e)
        )
      )

    const turn = (ctx: TurnContext<C>): Effect.Effect<TurnOutcome<C>, unknown> => {
      const payload = ctx.payload
      const records = payload.turns ?? []
      const previous = records.at(-1)
      // Failed attempts of this turn: the task's failures since the last checkpoint.
      const attempt = ctx.turn > 0 && previous ? Math.max(0, ctx.retries - previous.retries) : ctx.retries
      const context: C = { ...payload, attempt }
      const isLastTurn = maxTurns !== undefined && ctx.turn >= maxTurns - 1
      // Aborted with the turn's signal, and when the turn's fiber is interrupted (for promise-based tools).
      const abort = new AbortController()
      const forwardAbort = () => abort.abort(ctx.signal.reason)

      const body = Effect.gen(function*() {
        const startedAt = yield* Clock.currentTimeMillis
        if (ctx.turn === 0 && ctx.retries === 0) yield* runHook("onRunStart", hooks.onRunStart && (() => hooks.onRunStart!(context, ctx)))
        yield* runHook("onTurnStart", hooks.onTurnStart && (() => hooks.onTurnStart!(context, ctx)))

        const steering = ctx.steering.map(steeringMessage)
        // Calls the last turn left waiting are answered first, right after that turn's other tool messages.
        const resumed = (payload.pendingTools ?? []).map((p) => resumedToolMessage(p, ctx.results))
        const messages: Array<ChatMessage> = [
          ...(payload.messages ?? []),
          ...resumed,
          ...(ctx.turn === 0 ? [{ role: "user", content: payload.query } as const] : []),
          ...steering
        ]
        const instructions = options.instructions === undefined
          ? ""
          : yield* fromReturned(() => resolve(options.instructions!, context, ctx))
        const system = [
          instructions,
          maxTurns !== undefined ? `You must reach a final response in ${maxTurns} turns or less.` : "",
          final ? `Your final response must be made using the '${FINAL_OUTPUT}' tool.` : ""
        ].filter((s) => s !== "").join("\n\n")
        const models = [resolve(options.model, context, ctx), ...(options.fallbackModels ?? [])]
        const model = models[attempt % models.length]!
        const settings = options.modelSettings === undefined ? {} : resolve(options.modelSettings, context, ctx)
        const toolChoice: ChatCompletionToolChoiceOption | undefined = isLastTurn
          ? final ? { type: "function", function: { name: FINAL_OUTPUT } } : "none"
          : settings.toolChoice !== undefined
          ? toolChoiceParam(settings.toolChoice)
          : undefined
        const params: ChatCompletionCreateParamsNonStreaming = {
          model,
          messages: system === "" ? messages : [{ role: "system", content: system }, ...messages],
          ...(settings.temperature !== undefined ? { temperature: settings.temperature } : {}),
          ...(settings.maxCompletionTokens !== undefined ? { max_completion_tokens: settings.maxCompletionTokens } : {}),
          ...(definitions.length > 0
            ? {
              tools: definitions,
              ...(toolChoice !== undefined ? { tool_choice: toolChoice } : {}),
              ...(settings.parallelToolCalls !== undefined ? { parallel_tool_calls: settings.parallelToolCalls } : {})
            }
            : {})
        }

        const client = yield* getClient(ctx.apiKeys)
        const calledAt = yield* Clock.currentTimeMillis
        const deltas = options.stream ? textDeltas((text) => ctx.emit("completion_delta", { text })) : undefined
        const reply = yield* createCompletion(client, params, {
          signal: abort.signal,
          onChunk: deltas === undefined ? undefined : (chunk: ChatCompletionChunk) => {
            const text = chunk.choices[0]?.delta.content
            if (text) deltas.push(text)
          }
        }).pipe(Effect.onExit((exit) => Effect.sync(() => (exit._tag === "Success" ? deltas?.flush() : deltas?.discard()))))
        const modelMs = (yield* Clock.currentTimeMillis) - calledAt
        ctx.emit("completion", { model, modelMs, finishReason: reply.finishReason, usage: reply.usage })
        const conversation = [...messages, assistantMessage(reply)]

        const finish = (toolMessages: ReadonlyArray<ChatMessage>, toolCalls: ReadonlyArray<ToolCallRecord>) =>
          Effect.map(Clock.currentTimeMillis, (now): C => {
            const record: TurnRecord = {
              turn: ctx.turn,
              model,
              attempt,
              retries: ctx.retries,
              ...(records.length === 0 || lastInstructions(records) !== system ? { instructions: system } : {}),
              requestMessages: messages.length,
              steering: steering.length,
              startedAt,
              modelMs,
              ms: now - startedAt,
              ...(reply.finishReason !== null ? { finishReason: reply.finishReason } : {}),
              ...(reply.usage ? { usage: reply.usage } : {}),
              toolCalls
            }
            const { pendingTools: _answered, ...rest } = context
            return {
              ...rest,
              messages: [...conversation, ...toolMessages],
              turn: ctx.turn + 1,
              turns: [...records, record]
            } as unknown as C
          })
        const runTools = (calls: ModelReply["toolCalls"]) =>
          Effect.forEach(
            calls,
            (call) =>
              runToolCall(byName, call, {
                taskId: ctx.taskId,
                ownerId: ctx.ownerId,
                attempt: ctx.attempt,
                turn: ctx.turn,
                context,
                signal: abort.signal,
                emit: ctx.emit,
                spawn: ctx.spawn,
                newToken: ctx.resultToken
              }),
            { concurrency: "unbounded" }
          )
        /** Continues, or ends waiting when some calls answer later (their tool messages come with the next turn). */
        const afterTools = (outcomes: ReadonlyArray<{ message?: ChatMessage | undefined; record: ToolCallRecord; pending?: PendingCall | undefined }>) =>
          Effect.gen(function*() {
            const next = yield* finish(
              outcomes.flatMap((o) => o.message === undefined ? [] : [o.message]),
              outcomes.map((o) => o.record)
            )
            const pending = outcomes.flatMap((o) => o.pending === undefined ? [] : [o.pending])
            if (pending.length === 0) return Continue(next)
            const pendingTools = pending.map((p) => ({
              toolCallId: p.toolCallId,
              resultId: p.resultId,
              kind: p.kind,
              ...(p.children !== undefined ? { children: p.children } : {})
            }))
            return Wait<C>({ payload: { ...next, pendingTools } as C, pending: waitSpecs(pending) })
          })
        const done = (output: unknown, next: C) => Done<C>(output, { ...next, output })

        if (final) {
          const finalCall = reply.toolCalls.find((c) => c.function.name === FINAL_OUTPUT)
          if (finalCall) {
            const decoded = yield* Effect.result(final.decode(finalCall.function.arguments))
            if (decoded._tag === "Success") {
              // The other calls of this answer are not run; each call still gets its tool message.
              const skipped = reply.toolCalls.filter((c) => c !== finalCall)
              const next = yield* finish(
                reply.toolCalls.map((c) => ({
                  role: "tool" as const,
                  tool_call_id: c.id,
                  content: c === finalCall ? "Final output accepted." : "Not run: the final output was given."
                })),
                [
                  { id: finalCall.id, name: FINAL_OUTPUT, ms: 0 },
                  ...skipped.map((c) => ({ id: c.id, name: c.function.name, ms: 0, error: "not run: final output given" }))
                ]
              )
              return done(decoded.success, next)
            }
            if (isLastTurn) {
              return yield* new InvalidModelOutput({ message: `final output on the last turn is invalid: ${decoded.failure.message}` })
            }
            const others = yield* runTools(reply.toolCalls.filter((c) => c !== finalCall))
            const outcomes = reply.toolCalls.map((c) =>
              c === finalCall
                ? {
                  message: { role: "tool" as const, tool_call_id: c.id, content: `Error: ${decoded.failure.message}` },
                  record: { id: c.id, name: FINAL_OUTPUT, ms: 0, error: decoded.failure.message }
                }
                : others.find((o) => o.record.id === c.id)!
            )
            return yield* afterTools(outcomes)
          }
          if (isLastTurn) {
            return yield* new InvalidModelOutput({ message: `the model did not call ${FINAL_OUTPUT} on the last turn` })
          }
        } else if (reply.toolCalls.length === 0 || isLastTurn) {
          if (reply.content) {
            // Tool calls on the last turn (the model ignored tool_choice "none") are answered, not run.
            const next = yield* finish(
              reply.toolCalls.map((c) => ({ role: "tool" as const, tool_call_id: c.id, content: "Not run: this was the last turn." })),
              reply.toolCalls.map((c) => ({ id: c.id, name: c.function.name, ms: 0, error: "not run: last turn" }))
            )
            return done(reply.content, next)
          }
          if (reply.refusal) return yield* new FatalAgentError({ message: `the model refused: ${reply.refusal}` })
          return yield* new InvalidModelOutput({ message: "the model gave neither an answer nor tool calls" })
        }
        return yield* afterTools(yield* runTools(reply.toolCalls))
      })

      return Effect.acquireUseRelease(
        Effect.sync(() => {
          if (ctx.signal.aborted) forwardAbort()
          else ctx.signal.addEventListener("abort", forwardAbort, { once: true })
        }),
        () => body,
        () => Effect.sync(() => ctx.signal.removeEventListener("abort", forwardAbort))
      ).pipe(
        Effect.tap((outcome) =>
          Effect.andThen(
            runHook("onTurnEnd", hooks.onTurnEnd && (() => hooks.onTurnEnd!(context, ctx, outcome))),
            outcome._tag === "Done"
              ? runHook("onRunEnd", hooks.onRunEnd && (() => hooks.onRunEnd!(context, ctx, { output: outcome.output })))
              : Effect.void
          )
        ),
        Effect.tapError((error) =>
          error instanceof FatalAgentError
            ? runHook("onRunEnd", hooks.onRunEnd && (() => hooks.onRunEnd!(context, ctx, { error })))
            : Effect.void
        ),
        Effect.onInterrupt(() =>
          Effect.sync(() => abort.abort(ctx.signal.reason)).pipe(
            Effect.andThen(runHook("onRunCancelled", hooks.onRunCancelled && (() => hooks.onRunCancelled!(context, ctx, ctx.signal.reason)))),
            Effect.ignore
          )
        )
      )
    }

    super({
      name: options.name,
      ...(options.description !== undefined ? { description: options.description } : {}),
      payload: options.contextSchema ?? (AgentContext as unknown as Schema.Codec<C, unknown>),
      turn
    })
    this.tools = tools
    this.maxTurns = maxTurns
    this.outputType = options.outputType
  }
}
