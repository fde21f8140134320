/**
 * What the orchestrator runs: an agent is a name (its queue), a payload schema and a turn function.
 * One pickup of a task runs one turn; the turn either continues (the new payload is checkpointed and
 * the task goes back on the queue) or is done (the output completes the task). Throwing fails the
 * attempt, classified by `AgentErrors.classifyFailure`.
 *
 * `BaseAgent` is the plain-function agent; the LLM `Agent` (src/agent/) extends it with the same shape.
 */
import { randomUUID } from "node:crypto"
import { Effect, Schema } from "effect"
import { AgentName } from "../streams/TaskEvent.ts"
import { InvalidInput } from "./Errors.ts"

/** Everything a turn gets to know about its task. */
export interface TurnContext<P> {
  readonly taskId: string
  readonly ownerId: string
  readonly agent: string
  readonly payload: P
  /** Turns completed before this one (0 on the first turn). */
  readonly turn: number
  /** The claim number of this attempt (the lease); grows with every pickup. */
  readonly attempt: number
  /** Failed attempts so far. */
  readonly retries: number
  /** Steering messages to apply in this turn (all of them count as applied when the turn ends). */
  readonly steering: ReadonlyArray<unknown>
  /** Aborted when the turn is interrupted (cancel, lost lease, timeout, shutdown). */
  readonly signal: AbortSignal
  /** Records a custom event in the live feed (not in the task's history). */
  readonly emit: (type: string, data: unknown) => void
}

/**
 * `Done.payload` (optional) is the payload as the last turn left it, for the task's history: without
 * it the last turn's work (e.g. an LLM agent's final model call) would appear nowhere but in `output`.
 */
export type TurnOutcome<P> =
  | { readonly _tag: "Continue"; readonly payload: P }
  | { readonly _tag: "Done"; readonly output: unknown; readonly payload?: P }

export const Continue = <P>(payload: P): TurnOutcome<P> => ({ _tag: "Continue", payload })
export const Done = <P = never>(output: unknown, payload?: P): TurnOutcome<P> =>
  payload === undefined ? { _tag: "Done", output } : { _tag: "Done", output, payload }

export type TurnFunction<P> = (ctx: TurnContext<P>) => Effect.Effect<TurnOutcome<P>, unknown> | Promise<TurnOutcome<P>>

/** A task ready to be enqueued. */
export interface Task<P = unknown> {
  readonly id: string
  readonly agent: string
  readonly ownerId: string
  readonly payload: P
  /** At most one task per (agent, key) is ever enqueued; see `EnqueueOptions.idempotencyKey`. */
  readonly idempotencyKey?: string
}

export interface AgentOptions<P> {
  readonly name: string
  readonly description?: string
  /** Validates payloads on enqueue and before each turn. Default: any JSON value. */
  readonly payload?: Schema.Codec<P, unknown>
  /** P is inferred from `payload` (or given explicitly), never from what the turn returns. */
  readonly turn: TurnFunction<NoInfer<P>>
}

const decodeName = Schema.decodeUnknownSync(AgentName)

export class BaseAgent<P = unknown> {
  readonly name: string
  readonly description: string
  readonly payloadSchema: Schema.Codec<P, unknown>
  readonly runTurn: TurnFunction<P>

  constructor(options: AgentOptions<P>) {
    try {
      this.name = decodeName(options.name)
    } catch (e) {
      throw new InvalidInput({ message: `invalid agent name ${JSON.stringify(options.name)}: ${String(e)}` })
    }
    this.description = options.description ?? ""
    this.payloadSchema = options.payload ?? (Schema.Json as unknown as Schema.Codec<P, unknown>)
    this.runTurn = options.turn
  }

  /** A new task for this agent (validated when enqueued). */
  createTask(
    options: { readonly ownerId: string; readonly payload: P; readonly id?: string; readonly idempotencyKey?: string }
  ): Task<P> {
    return {
      id: options.id ?? randomUUID(),
      agent: this.name,
      ownerId: options.ownerId,
      payload: options.payload,
      ...(options.idempotencyKey !== undefined ? { idempotencyKey: options.idempotencyKey } : {})
    }
  }

  /** Encodes a payload to its stored JSON form, or fails with a clear message. */
  encodePayload(payload: P): Effect.Effect<unknown, InvalidInput> {
    return Schema.encodeUnknownEffect(this.payloadSchema)(payload).pipe(
      Effect.mapError((e) => new InvalidInput({ message: `invalid payload for agent ${this.name}: ${e.message}` }))
    )
  }

  /** Decodes a stored payload before a turn. */
  decodePayload(stored: unknown): Effect.Effect<P, InvalidInput> {
    return Schema.decodeUnknownEffect(this.payloadSchema)(stored).pipe(
      Effect.mapError((e) => new InvalidInput({ message: `stored payload of agent ${this.name} is invalid: ${e.message}` }))
    )
  }
}

/** A plain-function agent. */
export const defineAgent = <P = unknown>(options: AgentOptions<P>): BaseAgent<P> => new BaseAgent(options)
