/**
 * The one table that maps typed errors to HTTP statuses. Every route answers failures through
 * `sendError`, so a client always gets `{ error: { tag, message } }` with the status below. A `RedisError`
 * is 503 with `Retry-After` when sending the same request again soon can succeed (Redis unreachable, slow to
 * answer, or refusing writes for now, e.g. at `maxmemory`), and 500 when it cannot (a command or script that
 * fails as such: sending it again fails alike).
 */
import type { FastifyReply } from "fastify"
import { RedisError } from "../../streams/StreamError.ts"

const statusByTag: Readonly<Record<string, number>> = {
  InvalidInput: 400,
  InvalidConfig: 400,
  InvalidSteeringCount: 400,
  TimelineRangeInvalid: 400,
  InvalidWait: 400,
  Unauthorized: 401,
  InvalidResultToken: 403,
  TaskNotFound: 404,
  BatchNotFound: 404,
  AgentNotFound: 404,
  TaskAlreadyExists: 409,
  TaskAlreadyFinished: 409,
  BatchAlreadyExists: 409,
  BatchAlreadyFinished: 409,
  StaleLease: 409,
  NotDue: 409,
  ResultNotPending: 409,
  ResultAlreadyReceived: 409,
  PayloadTooLarge: 413,
  RedisError: 503,
  TooManyStreams: 503,
  CorruptEntry: 500
}

export interface HttpErrorBody {
  readonly error: { readonly tag: string; readonly message: string }
}

export const httpStatusOf = (error: unknown): number => {
  if (error instanceof RedisError && !error.isRetryable) return 500
  const tag = (error as { _tag?: unknown })?._tag
  return typeof tag === "string" ? statusByTag[tag] ?? 500 : 500
}

export const errorBody = (error: unknown): HttpErrorBody => {
  const tag = (error as { _tag?: unknown })?._tag
  const status = httpStatusOf(error)
  return {
    error: {
      tag: typeof tag === "string" ? tag : "InternalError",
      // Internal errors say nothing of their insides to the client.
      message: status === 500 && typeof tag !== "string"
        ? "internal error"
        : error instanceof Error
        ? error.message
        : String(error)
    }
  }
}

/** Seconds a client should wait before sending a request refused by a retryable `RedisError` again. */
const RETRY_AFTER_SECONDS = "1"

export const sendError = (reply: FastifyReply, error: unknown) => {
  if (error instanceof RedisError && error.isRetryable) reply.header("retry-after", RETRY_AFTER_SECONDS)
  return reply.code(httpStatusOf(error)).send(errorBody(error))
}
