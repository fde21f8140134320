/**
 * A tool an LLM agent can call: a name, a description, a Schema for its arguments (the JSON schema sent
 * to the model is derived from it) and a function. Also the one place that turns a model's tool call
 * into a tool message: arguments parsed and decoded, the function run, the result or error rendered.
 *
 * Invariants: a tool's function only ever sees arguments that decoded against its Schema; any failure
 * of a call (unknown tool, bad JSON, bad arguments, the function threw) becomes a tool message the
 * model can read, except a `FatalAgentError`, which fails the task.
 *
 * A tool may also answer later: it returns `deferred()` (the result is delivered by a client, e.g. a human's
 * approval, with `completeDeferredTool(taskId, ctx.resultId, result)`) or `waitForChildren(ids)` (the child
 * tasks it spawned with `ctx.spawn`). The turn then ends waiting, and the tool message is written when the
 * task resumes.
 */
import type { ChatCompletionFunctionTool, ChatCompletionMessageFunctionToolCall } from "openai/resources/chat/completions"
import { Cause, Clock, Effect, Exit, Schema, SchemaAST } from "effect"
import { OpenAiStructuredOutput } from "effect/ai"
import { FatalAgentError } from "../AgentErrors.ts"
import { InvalidConfig } from "../Errors.ts"
import { createHash } from "node:crypto"
import type { ChildSpec } from "../Agent.ts"
import type { ChatMessage, ToolCallRecord } from "./AgentContext.ts"

/** What a tool's function gets besides its arguments. */
export interface ToolContext<C = unknown> {
  readonly taskId: string
  readonly ownerId: string
  /** The claim number of this attempt. */
  readonly attempt: number
  readonly turn: number
  readonly toolCallId: string
  /** The agent context (payload) as of this turn. */
  readonly context: C
  /** Aborted when the turn is interrupted. */
  readonly signal: AbortSignal
  /** Records a custom event in the live feed. */
  readonly emit: (type: string, data: unknown) => void
  /** The id a deferred result of this call is delivered under (the tool call id when it is a valid id). */
  readonly resultId: string
  /** The per-call token a delivery of this call's deferred result over HTTP must present. */
  readonly resultToken: string
  /** Spawns child tasks of the task (see `TurnContext.spawn`); wait for them with `waitForChildren(ids)`. */
  readonly spawn: <Q>(children: ReadonlyArray<ChildSpec<Q>>) => Promise<ReadonlyArray<string>>
}

const pendingMark: unique symbol = Symbol.for("factorial/PendingToolResult")

/** What a tool returns to answer later. `timeout` (seconds): then the model is told it timed out (`resume`) or the task fails. */
export interface PendingToolResult {
  readonly [pendingMark]: true
  readonly kind: "result" | "children"
  readonly children?: ReadonlyArray<string>
  readonly timeout?: number
  readonly onTimeout?: "fail" | "resume"
}

export interface PendingOptions {
  readonly timeout?: number
  /** Default `resume`: the model gets a tool message saying the result timed out. */
  readonly onTimeout?: "fail" | "resume"
}

/** The result of this tool call will be delivered later by a client (`completeDeferredTool(taskId, ctx.resultId, result)`). */
export const deferred = (options: PendingOptions = {}): PendingToolResult => ({ [pendingMark]: true, kind: "result", ...options })

/** The result of this tool call is the ends of these child tasks (spawned with `ctx.spawn`), once all have ended. */
export const waitForChildren = (children: ReadonlyArray<string>, options: PendingOptions = {}): PendingToolResult => ({
  [pendingMark]: true,
  kind: "children",
  children,
  ...options
})

const isPending = (value: unknown): value is PendingToolResult =>
  typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[pendingMark] === true

const resultIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/

/** The id a tool call's deferred result is delivered under: its own id when that is a valid id, else one derived from it. */
export const resultIdOf = (toolCallId: string): string =>
  resultIdPattern.test(toolCallId)
    ? toolCallId
    : `call-${createHash("sha256").update(toolCallId).digest("hex").slice(0, 32)}`

/** A tool call that answers later: what the turn waits for, and what the resumed turn turns into its tool message. */
export interface PendingCall {
  readonly toolCallId: string
  readonly resultId: string
  readonly token: string
  readonly kind: "result" | "children"
  readonly children?: ReadonlyArray<string>
  readonly timeout?: number
  readonly onTimeout?: "fail" | "resume"
}

/** A function's result in any of the three shapes we accept. */
export type Returned<A> = A | PromiseLike<A> | Effect.Effect<A, unknown>

export interface ToolOptions<A, C> {
  readonly name: string
  readonly description?: string
  /** The arguments: a Struct (the model is sent its JSON schema, strict when OpenAI's subset allows). */
  readonly parameters: Schema.Codec<A, unknown>
  /** Force strict mode off (it is on whenever the schema fits OpenAI's strict subset). */
  readonly strict?: boolean
  /** The result goes to the model: a string as is, anything else as JSON. */
  readonly execute: (args: A, ctx: ToolContext<C>) => Returned<unknown>
}

/** A defined tool. `C` is the agent context type it expects. */
export interface Tool<C = unknown> {
  readonly name: string
  readonly description: string
  /** The tool as sent to the model. */
  readonly definition: ChatCompletionFunctionTool
  /** Decodes the model's JSON arguments. */
  readonly decode: (json: string) => Effect.Effect<unknown, ToolArgumentsError>
  /** Decodes the model's JSON arguments with the tool's Schema, then runs `execute` on what they decode to. */
  readonly run: (json: string, ctx: ToolContext<C>) => Effect.Effect<unknown, unknown>
}

/** The model's arguments are not JSON or do not fit the tool's Schema (sent back to the model). */
export class ToolArgumentsError extends Schema.TaggedError<ToolArgumentsError>()("ToolArgumentsError", {
  message: Schema.String
}) {}

const toolName = /^[a-zA-Z0-9_-]{1,64}$/

/**
 * The JSON schema for a Schema and the codec that decodes the model's JSON back: OpenAI's strict subset
 * when the Schema fits it (optional fields become required and nullable), else the plain JSON schema.
 */
export const jsonSchemaFor = <A>(schema: Schema.Codec<A, unknown>, strict = true): {
  readonly jsonSchema: Record<string, unknown>
  readonly strict: boolean
  readonly codec: Schema.ConstraintCodec<A, unknown>
} => {
  const ast = schema.ast
  if (SchemaAST.isObjects(ast) && ast.propertySignatures.length === 0 && ast.indexSignatures.length === 0) {
    // No arguments. (An empty Struct accepts any non-null value, which JSON schema says as `not null`.)
    const jsonSchema = { type: "object", properties: {}, required: [], additionalProperties: false }
    return { jsonSchema, strict, codec: schema }
  }
  if (strict) {
    try {
      const { codec, jsonSchema } = OpenAiStructuredOutput.toCodecOpenAI(schema)
      return { jsonSchema: jsonSchema as Record<string, unknown>, strict: true, codec }
    } catch {
      // Not expressible in the strict subset: fall through to the plain JSON schema.
    }
  }
  const document = Schema.toJsonSchemaDocument(schema)
  const jsonSchema: Record<string, unknown> = { ...document.schema }
  if (Object.keys(document.definitions).length > 0) jsonSchema.$defs = document.definitions
  return { jsonSchema, strict: false, codec: Schema.toCodecJson(schema) }
}

/** Decodes a JSON argument string with a codec; the error message is written for the model. */
export const decodeJsonArguments = <A>(codec: Schema.ConstraintCodec<A, unknown>) => {
  const decode = Schema.decodeUnknownEffect(codec)
  return (json: string): Effect.Effect<A, ToolArgumentsError> =>
    Effect.try({
      try: () => (json.trim() === "" ? {} : JSON.parse(json)) as unknown,
      catch: (e) => new ToolArgumentsError({ message: `arguments are not valid JSON: ${(e as Error).message}` })
    }).pipe(
      Effect.flatMap((value) =>
        decode(value).pipe(
          Effect.mapError((e) => new ToolArgumentsError({ message: `invalid arguments: ${e.message}` }))
        )
      )
    )
}

/** Defines a tool. Throws `InvalidConfig` for a bad name or parameters that are not an object. */
export const tool = <A, C = unknown>(options: ToolOptions<A, C>): Tool<C> => {
  if (!toolName.test(options.name)) {
    throw new InvalidConfig({ message: `tool name ${JSON.stringify(options.name)} must match ${toolName}` })
  }
  const { jsonSchema, strict, codec } = jsonSchemaFor(options.parameters, options.strict ?? true)
  if (jsonSchema.type !== "object") {
    throw new InvalidConfig({ message: `the parameters of tool ${options.name} must be a Schema.Struct (an object)` })
  }
  const description = options.description ?? `Run ${options.name}`
  const decode = decodeJsonArguments(codec)
  return {
    name: options.name,
    description,
    definition: { type: "function", function: { name: options.name, description, parameters: jsonSchema, strict } },
    decode,
    run: (json, ctx) => Effect.flatMap(decode(json), (args) => fromReturned(() => options.execute(args, ctx)))
  }
}

/** Runs a user function's result (a value, a promise or an Effect) as an Effect. */
export const fromReturned = <A>(f: () => Returned<A>): Effect.Effect<A, unknown> =>
  Effect.suspend(() => {
    let r: Returned<A>
    try {
      r = f()
    } catch (e) {
      return Effect.fail(e)
    }
    if (Effect.isEffect(r)) return r as Effect.Effect<A, unknown>
    if (typeof (r as PromiseLike<A> | null)?.then === "function") return Effect.tryPromise({ try: () => r as PromiseLike<A>, catch: (e) => e })
    return Effect.succeed(r as A)
  })

const errorText = (e: unknown): string =>
  e instanceof Error ? e.message : typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)

export const resultText = (result: unknown): string =>
  typeof result === "string" ? result : result === undefined ? "" : JSON.stringify(result)

/** One tool call carried out: the tool message for the model (or, answering later, what it waits for) and the record. */
export type ToolCallOutcome =
  | { readonly message: ChatMessage; readonly record: ToolCallRecord; readonly pending?: undefined }
  | { readonly message?: undefined; readonly record: ToolCallRecord; readonly pending: PendingCall }

/**
 * Carries out one tool call of the model. Fails only with a `FatalAgentError` (from the tool); every
 * other failure is the tool message's content. A defect (a thrown error) counts as a tool error too.
 */
export const runToolCall = <C>(
  tools: ReadonlyMap<string, Tool<C>>,
  call: ChatCompletionMessageFunctionToolCall,
  ctx: Omit<ToolContext<C>, "toolCallId" | "resultId" | "resultToken"> & { readonly newToken: () => string }
): Effect.Effect<ToolCallOutcome, FatalAgentError> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const t = tools.get(call.function.name)
    const { newToken, ...rest } = ctx
    const resultId = resultIdOf(call.id)
    const resultToken = newToken()
    const exit = yield* Effect.exit(
      t === undefined
        ? Effect.fail(
          new ToolArgumentsError({
            message: `unknown tool ${JSON.stringify(call.function.name)}; available: ${[...tools.keys()].join(", ")}`
          })
        )
        : t.run(call.function.arguments, { ...rest, toolCallId: call.id, resultId, resultToken })
    )
    const ms = (yield* Clock.currentTimeMillis) - start
    const base = { id: call.id, name: call.function.name, ms }
    if (Exit.isSuccess(exit) && isPending(exit.value)) {
      const p = exit.value
      ctx.emit("tool_call", { ...base, ok: true, pending: p.kind })
      return {
        record: { ...base, pending: p.kind },
        pending: {
          toolCallId: call.id,
          resultId,
          token: resultToken,
          kind: p.kind,
          ...(p.children !== undefined ? { children: p.children } : {}),
          ...(p.timeout !== undefined ? { timeout: p.timeout } : {}),
          onTimeout: p.onTimeout ?? "resume"
        }
      }
    }
    if (Exit.isSuccess(exit)) {
      const content = resultText(exit.value)
      ctx.emit("tool_call", { ...base, ok: true })
      return { message: { role: "tool", tool_call_id: call.id, content }, record: base }
    }
    if (Cause.hasInterrupts(exit.cause)) return yield* Effect.interrupt
    const error = Cause.squash(exit.cause)
    if (error instanceof FatalAgentError) return yield* Effect.fail(error)
    const message = errorText(error)
    ctx.emit("tool_call", { ...base, ok: false, error: message })
    return {
      message: { role: "tool", tool_call_id: call.id, content: `Error: ${message}` },
      record: { ...base, error: message }
    }
  })
