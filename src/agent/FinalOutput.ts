/**
 * The `final_output` tool: how an agent with an `outputType` gives its answer. The model calls it with
 * the output as arguments; they are validated against the Schema before the task completes.
 *
 * Invariant: an output only ever leaves here validated and in its JSON (encoded) form, so what the task
 * stores is what the Schema accepts. A Schema whose JSON form is not an object is wrapped as
 * `{ output: … }` for the model (function arguments must be objects) and unwrapped here.
 */
import type { ChatCompletionFunctionTool } from "openai/resources/chat/completions"
import { Effect, Schema } from "effect"
import { decodeJsonArguments, jsonSchemaFor, type ToolArgumentsError } from "./Tool.ts"

export const FINAL_OUTPUT = "final_output"

export interface FinalOutput {
  readonly definition: ChatCompletionFunctionTool
  /** Validates the model's arguments; succeeds with the output's JSON form. */
  readonly decode: (json: string) => Effect.Effect<unknown, ToolArgumentsError>
}

export const finalOutput = <O>(outputType: Schema.Codec<O, unknown>): FinalOutput => {
  const isObject = Schema.toJsonSchemaDocument(outputType).schema.type === "object"
  const schema = isObject ? outputType : Schema.Struct({ output: outputType })
  const { jsonSchema, strict, codec } = jsonSchemaFor(schema as Schema.Codec<unknown, unknown>)
  const decodeArgs = decodeJsonArguments(codec)
  const toJson = Schema.encodeUnknownEffect(Schema.toCodecJson(outputType))
  return {
    definition: {
      type: "function",
      function: {
        name: FINAL_OUTPUT,
        description: "Give your final answer. Call this exactly once, when you are done.",
        parameters: jsonSchema,
        strict
      }
    },
    decode: (json) =>
      decodeArgs(json).pipe(
        Effect.map((args) => (isObject ? args : (args as { output: O }).output)),
        Effect.flatMap((output) => toJson(output).pipe(Effect.orDie))
      )
  }
}
