/**
 * How a failed turn is classified for the retry rules:
 * - `FatalAgentError`: the task fails now, no retry (bad request, auth, a bug the agent knows is final);
 * - `TransientAgentError` (rate limits, 5xx, connection): retried after an exponential backoff with jitter;
 * - a turn timeout or any other error: retried at once.
 * Every retry counts towards `maxRetries`; each attempt's error is recorded in the task's history.
 */
import { Schema } from "effect"

export class FatalAgentError extends Schema.TaggedError<FatalAgentError>()("FatalAgentError", {
  message: Schema.String
}) {}

export class TransientAgentError extends Schema.TaggedError<TransientAgentError>()("TransientAgentError", {
  message: Schema.String,
  /** A server-given delay (e.g. Retry-After), in ms. */
  retryAfterMs: Schema.optionalKey(Schema.Number)
}) {}

export class TurnTimeout extends Schema.TaggedError<TurnTimeout>()("TurnTimeout", {
  seconds: Schema.Number
}) {
  override get message() {
    return `turn timed out after ${this.seconds}s`
  }
}

export type RetryDecision = "fatal" | "retry" | "backoff"

const hasTag = (e: unknown, tag: string): boolean =>
  typeof e === "object" && e !== null && "_tag" in e && (e as { _tag: unknown })._tag === tag

export const classifyFailure = (error: unknown): RetryDecision =>
  hasTag(error, "FatalAgentError") ? "fatal" : hasTag(error, "TransientAgentError") ? "backoff" : "retry"

export const errorKind = (error: unknown): string =>
  typeof error === "object" && error !== null && "_tag" in error
    ? String((error as { _tag: unknown })._tag)
    : error instanceof Error
    ? error.name
    : "Error"

export const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error)

/** Exponential backoff with full jitter, capped: base·2^retries, at most `maxMs`. */
export const backoffDelayMs = (retries: number, random: number, baseMs = 1_000, maxMs = 300_000): number =>
  Math.round(Math.min(maxMs, baseMs * 2 ** retries) * (0.5 + random / 2))
