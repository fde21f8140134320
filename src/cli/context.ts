/**
 * What every CLI command shares: the global flags (Redis URL or Cluster nodes, namespace, partitions), the services of a
 * namespace (RedisClient + TaskStore) for the length of one command, the mapping of failures to exit
 * codes and messages, and small output helpers.
 *
 * Invariants: the partition count is the namespace's own (its meta hash) unless `--partitions` says
 * otherwise, and a `--partitions` that contradicts the namespace is a usage error, never a silent
 * misread; only writing commands fix the count of a new namespace. Connections close when the command
 * ends, whatever its outcome.
 */
import { Cause, Effect, Exit } from "effect"
import type { Keyspace } from "../../streams/Keys.ts"
import { namespaceKeys } from "../../streams/Keys.ts"
import { RedisClient, type RedisOptions } from "../../streams/RedisClient.ts"
import { TaskStore } from "../TaskStore.ts"
import { ExitCode, UsageError } from "./args.ts"
import type { Globals } from "./specs.ts"

export type { Globals }

/** The connection options of the global flags: a Cluster client for `--cluster-nodes`, else the URL. */
export const redisOptionsOf = (globals: Globals, connectTimeoutMs?: number): RedisOptions => ({
  ...(globals.clusterNodes !== undefined ? { clusterNodes: globals.clusterNodes } : { url: globals.redisUrl }),
  ...(connectTimeoutMs !== undefined ? { connectTimeoutMs } : {})
})

/** The namespace's keyspace: its recorded partition count, checked against `--partitions`. */
const keyspaceOf = (globals: Globals, write: boolean) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    const meta = namespaceKeys({ namespace: globals.namespace, partitions: 1 }).meta
    const stored = yield* redis.use("namespace meta", (c) => c.hget(meta, "partitions"))
    if (stored !== null && globals.partitions !== undefined && Number(stored) !== globals.partitions) {
      return yield* Effect.fail(
        new UsageError(`namespace ${globals.namespace} has ${stored} partitions, not ${globals.partitions}`)
      )
    }
    const partitions = stored !== null ? Number(stored) : globals.partitions ?? 1
    if (write && stored === null) yield* redis.use("namespace meta", (c) => c.hsetnx(meta, "partitions", partitions))
    return { namespace: globals.namespace, partitions } satisfies Keyspace
  })

/**
 * Runs a command's program with the namespace's services; `write` commands record the partition
 * count of a namespace that has none yet.
 */
export const withNamespace = <A, E>(
  globals: Globals,
  program: (keyspace: Keyspace) => Effect.Effect<A, E, TaskStore | RedisClient>,
  options: { readonly write?: boolean } = {}
) =>
  Effect.gen(function*() {
    const ks = yield* keyspaceOf(globals, options.write === true)
    return yield* program(ks).pipe(Effect.provide(TaskStore.layer(ks)))
  }).pipe(Effect.provide(RedisClient.layer(redisOptionsOf(globals, 3_000))))

export interface Io {
  readonly out: NodeJS.WriteStream
  readonly err: NodeJS.WriteStream
}

export const stdio: Io = { out: process.stdout, err: process.stderr }

const tagOf = (e: unknown): string | undefined =>
  e !== null && typeof e === "object" && "_tag" in e ? String((e as { _tag: unknown })._tag) : undefined

const messageOf = (e: unknown): string => e instanceof Error ? e.message : typeof e === "string" ? e : JSON.stringify(e)

/** The exit code of a failure, and its message on stderr (and as JSON on stdout with `--json`). */
export const reportFailure = (io: Io, e: unknown, json: boolean, redisLabel?: string): ExitCode => {
  const tag = tagOf(e)
  const code: ExitCode = e instanceof UsageError || tag === "InvalidInput" || tag === "InvalidConfig"
    ? ExitCode.usage
    : tag === "TaskNotFound"
    ? ExitCode.notFound
    : ExitCode.failure
  let message = messageOf(e)
  const redisError = e as { reason?: string; op?: string }
  if (tag === "RedisError" && (redisError.reason === "Connection" || redisError.op === "connect")) {
    message = `cannot reach Redis at ${redisLabel ?? "?"}: ${message}`
  }
  io.err.write(`factorial-ts: error: ${message}\n`)
  if (json) io.out.write(JSON.stringify({ error: { tag: tag ?? "Error", message } }) + "\n")
  return code
}

/** Runs an Effect to an exit code: its own on success, the failure's otherwise. Interruptible by `signal`. */
export const runToExitCode = async <E>(
  io: Io,
  effect: Effect.Effect<ExitCode, E>,
  options: { readonly json: boolean; readonly redisLabel?: string; readonly signal?: AbortSignal }
): Promise<ExitCode> => {
  const exit = await Effect.runPromiseExit(effect, options.signal !== undefined ? { signal: options.signal } : undefined)
  if (Exit.isSuccess(exit)) return exit.value
  if (Cause.hasInterruptsOnly(exit.cause)) return ExitCode.ok
  const failure = Cause.findErrorOption(exit.cause)
  const error = failure._tag === "Some" ? failure.value : Cause.squash(exit.cause)
  return reportFailure(io, error, options.json, options.redisLabel)
}

/** Writes with backpressure. */
export const write = (stream: NodeJS.WritableStream, text: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const ok = stream.write(text, (err) => (err ? reject(err) : undefined))
    if (ok) resolve()
    else stream.once("drain", resolve)
  })

export const iso = (ms: number): string => new Date(ms).toISOString()

/** A short one-line rendering of a JSON value. */
export const brief = (value: unknown, max = 60): string => {
  const text = JSON.stringify(value) ?? "undefined"
  return text.length <= max ? text : text.slice(0, max - 1) + "…"
}

