/**
 * What the orchestrator runs: an agent is a name (its queue), a payload schema and a turn function.
 * One pickup of a task runs one turn; the turn either continues (the new payload is checkpointed and
 * the task goes back on the queue), waits (checkpointed too; the task parks until deferred results and child
 * tasks are in, then the next turn gets them in `ctx.results`) or is done (the output completes the task).
 * Throwing fails the attempt, classified by `AgentErrors.classifyFailure`.
 *
 * `BaseAgent` is the plain-function agent; the LLM `Agent` (src/agent/) extends it with the same shape.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto"
import { Effect, Result, Schema } from "effect"
import { AgentName, type WaitResult } from "../streams/TaskEvent.ts"
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
  /** What arrived for the wait this turn resumes from, in the wait's order (empty after a plain turn). */
  readonly results: ReadonlyArray<DeliveredResult>
  /**
   * Spawns child tasks (of any agent) and returns their ids: each is registered with this task first, then
   * enqueued, so its end always reaches this task (ChildTaskFinished, also if it ends before this turn does).
   * Ids are derived from (this task, this turn, key): a retried turn spawns the same children again, which
   * changes nothing. `key` defaults to the spawn's position in the turn (so keep spawns in a stable order).
   * Wait for them by returning `Wait({ pending: ids })`; children still running when this task ends are cancelled.
   */
  readonly spawn: <Q>(children: ReadonlyArray<ChildSpec<Q>>) => Promise<ReadonlyArray<string>>
  /** A fresh per-call token for a deferred result, to hand to whoever will deliver it (the HTTP route checks it). */
  readonly resultToken: () => string
  /**
   * The running orchestrator's API keys (`openaiApiKey`, `xaiApiKey`): an LLM agent whose client names no key
   * of its own uses the one of its provider, before the provider's environment variable.
   */
  readonly apiKeys?: ApiKeys | undefined
}

/** API keys by provider, as an orchestrator hands them to its agents' turns. */
export interface ApiKeys {
  readonly openai?: string
  readonly xai?: string
}

/** A child task to spawn. */
export interface ChildSpec<Q> {
  readonly agent: BaseAgent<Q>
  readonly payload: Q
  /** Makes the child's id (with the parent's id and turn); default: the spawn's position in the turn. */
  readonly key?: string
}

/** A result handed to the turn after a wait: the item's id and what arrived (a result, a child's end, a timeout). */
export type DeliveredResult = { readonly id: string } & WaitResult

/**
 * One thing a turn waits for: a child task's id (from `ctx.spawn`), or the id of a deferred result that a client
 * will deliver (`completeDeferredTool`). `timeout` (seconds from now) or `timeoutAt` (ms): past it, the task fails
 * (`onTimeout: "fail"`, the default) or the next turn gets `{ id, timedOut: true }` (`"resume"`). `token`: the
 * per-call token a delivery over HTTP must present (default: a fresh one; see `ctx.resultToken`).
 */
export interface WaitSpec {
  readonly id: string
  readonly timeout?: number
  readonly timeoutAt?: number
  readonly onTimeout?: "fail" | "resume"
  readonly token?: string
}

/** The id of the child task spawned by `parentId` at `turn` under `key`. */
export const childTaskId = (parentId: string, turn: number, key: string): string =>
  `child-${createHash("sha256").update(`${parentId}\u0000${turn}\u0000${key}`).digest("hex").slice(0, 32)}`

export const newResultToken = (): string => randomBytes(18).toString("base64url")

/**
 * `Done.payload` (optional) is the payload as the last turn left it, for the task's history: without
 * it the last turn's work (e.g. an LLM agent's final model call) would appear nowhere but in `output`.
 */
export type TurnOutcome<P> =
  | { readonly _tag: "Continue"; readonly payload: P }
  | { readonly _tag: "Done"; readonly output: unknown; readonly payload?: P }
  | { readonly _tag: "Wait"; readonly payload: P; readonly pending: ReadonlyArray<WaitSpec | string> }

export const Continue = <P>(payload: P): TurnOutcome<P> => ({ _tag: "Continue", payload })
/** The turn ends waiting for `pending` (child ids or deferred result ids); its payload is checkpointed. */
export const Wait = <P>(options: { readonly payload: P; readonly pending: ReadonlyArray<WaitSpec | string> }): TurnOutcome<P> => ({
  _tag: "Wait",
  payload: options.payload,
  pending: options.pending
})
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
  /**
   * Validates payloads on enqueue and decodes the stored one before each turn. Default: any JSON value (checked
   * on enqueue and when a turn returns; the stored JSON is then taken as it is).
   */
  readonly payload?: Schema.Codec<P, unknown>
  /** P is inferred from `payload` (or given explicitly), never from what the turn returns. */
  readonly turn: TurnFunction<NoInfer<P>>
}

const decodeName = Schema.decodeUnknownSync(AgentName)

/**
 * An agent with its payload type erased: how the runtime holds agents of different payload types side by side
 * (a worker pool, the orchestrator's registry, the HTTP app). Sound because a payload only crosses it through
 * the agent's own codec: `createTask` and `encodePayload` take a payload that enqueue validates against the
 * payload schema at run time, and `runTurn` only ever gets a payload its `decodePayload` produced. Every
 * `BaseAgent<P>` is one (its methods take `P`; TypeScript compares method parameters both ways).
 */
export interface RunnableAgent {
  readonly name: string
  readonly description: string
  createTask(options: { readonly ownerId: string; readonly payload: unknown; readonly id?: string }): Task<unknown>
  encodePayload(payload: unknown): Result.Result<unknown, InvalidInput>
  decodePayload(stored: unknown): Result.Result<unknown, InvalidInput>
  runTurn(ctx: TurnContext<unknown>): ReturnType<TurnFunction<unknown>>
}

/** What enqueueing a task needs of its agent: its name (the queue) and its payload codec. */
export type EnqueueTarget<P> = Pick<BaseAgent<P>, "name" | "encodePayload">

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
    this.storedIsPayload = options.payload === undefined
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

  /**
   * The payload codec's encoder and decoder, built once (building one costs more than using it). They run
   * synchronously (a payload schema needs no services): no fiber step per payload on the hot paths.
   */
  private encoder: ((payload: unknown) => Result.Result<unknown, Schema.SchemaError>) | undefined
  /** Without a payload schema the stored JSON is the payload: it was checked as JSON when stored. */
  private readonly storedIsPayload: boolean
  private decoder: ((stored: unknown) => Result.Result<P, Schema.SchemaError>) | undefined

  /** Encodes a payload to its stored JSON form, or fails with a clear message. */
  encodePayload(payload: P): Result.Result<unknown, InvalidInput> {
    this.encoder ??= Schema.encodeUnknownResult(this.payloadSchema) as (payload: unknown) => Result.Result<unknown, Schema.SchemaError>
    return Result.mapError(this.encoder(payload), (e) => new InvalidInput({ message: `invalid payload for agent ${this.name}: ${e.message}` }))
  }

  /** Decodes a stored payload before a turn. */
  decodePayload(stored: unknown): Result.Result<P, InvalidInput> {
    if (this.storedIsPayload) return Result.succeed(stored as P)
    this.decoder ??= Schema.decodeUnknownResult(this.payloadSchema) as (stored: unknown) => Result.Result<P, Schema.SchemaError>
    return Result.mapError(this.decoder(stored), (e) => new InvalidInput({ message: `stored payload of agent ${this.name} is invalid: ${e.message}` }))
  }
}

/** A plain-function agent. */
export const defineAgent = <P = unknown>(options: AgentOptions<P>): BaseAgent<P> => new BaseAgent(options)
