/**
 * What every route does with its input and its Effect: decode the input with a Schema (a failure is an
 * `InvalidInput` with the schema's message on one line), run the Effect with the orchestrator's services,
 * and answer its value or its typed failure (through the one table in `HttpError.ts`).
 */
import { Effect, Exit, Schema } from "effect"
import type { FastifyReply } from "fastify"
import { InvalidInput } from "../Errors.ts"
import type { HttpServices, RunExit } from "./App.ts"
import { sendError } from "./HttpError.ts"

/** A decoder for one kind of input; `what` names it in the error message ("invalid <what>: …"). */
export const decoder = <Sc extends Schema.Top & { readonly DecodingServices: never }>(schema: Sc, what: string) => {
  const run = Schema.decodeUnknownEffect(schema)
  return (input: unknown): Effect.Effect<Sc["Type"], InvalidInput> =>
    run(input).pipe(
      Effect.mapError((e) => new InvalidInput({ message: `invalid ${what}: ${e.message.replace(/\n\s*/g, " ")}` }))
    )
}

/** Runs the effect and sends its value (`{ ok: true }` for none) with `status`, or its failure. */
export const responder = (run: RunExit) =>
async <A, E>(reply: FastifyReply, effect: Effect.Effect<A, E, HttpServices>, status = 200) => {
  const exit = await run(effect)
  return Exit.isSuccess(exit)
    ? reply.code(status).send(exit.value ?? { ok: true })
    : sendError(reply, exit.cause.reasons.find((r) => r._tag === "Fail")?.error ?? exit.cause)
}
