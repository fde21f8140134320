/**
 * Failures of the storage layer: Redis itself, and entries that do not decode.
 * `RedisError.reason` says whether retrying can help; nothing above this layer inspects ioredis errors.
 */
import { Result, Schema } from "effect"

/**
 * Connection: the server could not be reached (or is loading, or a Cluster slot is moving). Timeout: no reply in
 * time. Unavailable: the server refused the command for now, having run none of it (OOM: `maxmemory` reached;
 * BUSY: another script runs too long; READONLY / MASTERDOWN / NOREPLICAS: a failover in progress). Script and
 * Command: the call itself failed, and sending it again would fail the same way.
 */
export const RedisErrorReason = Schema.Literals(["Connection", "Timeout", "Unavailable", "Script", "Command"])
export type RedisErrorReason = typeof RedisErrorReason.Type

export class RedisError extends Schema.TaggedError<RedisError>()("RedisError", {
  op: Schema.String,
  reason: RedisErrorReason,
  message: Schema.String
}) {
  get isRetryable(): boolean {
    return this.reason === "Connection" || this.reason === "Timeout" || this.reason === "Unavailable"
  }
}

/** A stored entry that does not decode as an event: reported, never silently skipped. */
export class CorruptEntry extends Schema.TaggedError<CorruptEntry>()("CorruptEntry", {
  entry: Schema.String,
  message: Schema.String
}) {}

/**
 * A synchronous decoder of stored JSON text with `schema`; what does not decode is a `CorruptEntry`. The text
 * goes through `JSON.parse`, then the schema (about 40 % less CPU than `Schema.fromJsonString`, which the
 * metrics projector feels: it decodes every partition-log entry).
 */
export const jsonEntryDecoder = <S extends Schema.Top & { readonly DecodingServices: never }>(schema: S) => {
  const decode = Schema.decodeUnknownExit(schema)
  const corrupt = (raw: string, message: string) => Result.fail(new CorruptEntry({ entry: raw.slice(0, 200), message }))
  return (raw: string): Result.Result<S["Type"], CorruptEntry> => {
    let json: unknown
    try {
      json = JSON.parse(raw)
    } catch (e) {
      return corrupt(raw, `not JSON: ${e instanceof Error ? e.message : String(e)}`)
    }
    const exit = decode(json)
    return exit._tag === "Success" ? Result.succeed(exit.value) : corrupt(raw, String(exit.cause))
  }
}

/** Classifies a failure thrown by the Redis client into a `RedisError`. */
export const toRedisError = (op: string, cause: unknown): RedisError => {
  const message = cause instanceof Error ? cause.message : String(cause)
  const reason: RedisErrorReason =
    /ECONNREFUSED|ECONNRESET|EPIPE|ENOTFOUND|EHOSTUNREACH|Connection is closed|connect|MaxRetriesPerRequest|CLUSTERDOWN|TRYAGAIN|LOADING/i
        .test(message)
      ? "Connection"
      : /timeout|timed out/i.test(message)
      ? "Timeout"
      : /^(OOM|BUSY|READONLY|MASTERDOWN|NOREPLICAS) /.test(message)
      ? "Unavailable"
      : /script|lua|NOSCRIPT/i.test(message)
      ? "Script"
      : "Command"
  return new RedisError({ op, reason, message })
}
