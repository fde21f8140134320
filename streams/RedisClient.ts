/**
 * The Redis connection: the only module that imports ioredis. A standalone server (URL or host/port/db)
 * or a Cluster (seed nodes). The command connection is shared; it is not auto-pipelined: commands issued
 * while a write is in flight already leave together (Node's socket queues them into one writev), and
 * ioredis' auto-pipelining cost more client CPU than it saved (bench: worker concurrency 100 ran about a
 * third faster without it; ADR 0011). Blocking reads take a dedicated connection from `dedicated()`, released with `disconnect()` so an interrupted `XREADGROUP BLOCK`
 * never holds up shutdown. Connecting fails fast with a `RedisError` when Redis is unreachable.
 */
import { Context, Effect, Layer } from "effect"
import { Cluster, Redis } from "ioredis"
import type { ClusterNode } from "ioredis"
import type { Scope } from "effect"
import { type RedisError, toRedisError } from "./StreamError.ts"

export type RedisConnection = Redis | Cluster

export interface RedisOptions {
  /** `redis://[:password@]host:port/db`; takes precedence over host/port/db. */
  readonly url?: string | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly db?: number | undefined
  readonly password?: string | undefined
  /** Seed nodes of a Redis Cluster; when given, the client is a Cluster client. */
  readonly clusterNodes?: ReadonlyArray<{ readonly host: string; readonly port: number }> | undefined
  /** How long to wait for the first connection, in ms. */
  readonly connectTimeoutMs?: number | undefined
  /** CLIENT SETNAME of the connection (shows in CLIENT LIST: who holds which connection). */
  readonly connectionName?: string | undefined
}

const baseOptions = (o: RedisOptions) => ({
  lazyConnect: true,
  connectTimeout: o.connectTimeoutMs ?? 5_000,
  maxRetriesPerRequest: null,
  // RESP2: ioredis decodes it with less work than RESP3, and Redis encodes it with less (measured in bench/:
  // about 10% less client and Redis CPU per turn). Replies have the same shapes either way.
  protocol: 2 as const,
  enableReadyCheck: true,
  ...(o.connectionName !== undefined ? { connectionName: o.connectionName } : {})
})

/**
 * After a reconnect, ioredis 6.0.0 restores a connection's subscriptions (and a db other than 0) with
 * SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE / SELECT calls whose promises nothing handles (ioredis PR #2187, not in a
 * release yet). When one fails (the connection dropped again, NOPERM), Node reports an unhandled rejection,
 * which ends the process by default: a worker process would die of its cancel-notice subscriber. So each such
 * call on our connections gets a handler; the caller still gets the same promise, rejection included, and
 * ioredis reconnects and restores them again on the next drop. (A Cluster's subscriber handles its own.)
 */
const handleRestoringCalls = (conn: Redis): Redis => {
  const target = conn as unknown as Record<string, (...args: Array<unknown>) => Promise<unknown>>
  for (const name of ["subscribe", "psubscribe", "ssubscribe", "select"]) {
    const send = target[name]!.bind(conn)
    target[name] = (...args) => {
      const reply = send(...args)
      reply.catch(() => {})
      return reply
    }
  }
  return conn
}

/** Builds (without connecting) a client for the options. */
export const makeConnection = (o: RedisOptions): RedisConnection => {
  if (o.clusterNodes !== undefined && o.clusterNodes.length > 0) {
    return new Cluster(o.clusterNodes.map((n): ClusterNode => ({ host: n.host, port: n.port })), {
      lazyConnect: true,
      enableReadyCheck: true,
      redisOptions: { ...baseOptions(o), ...(o.password !== undefined ? { password: o.password } : {}) }
    })
  }
  const common = { ...baseOptions(o), ...(o.password !== undefined ? { password: o.password } : {}) }
  if (o.url !== undefined) return handleRestoringCalls(new Redis(o.url, common))
  return handleRestoringCalls(new Redis({ ...common, host: o.host ?? "127.0.0.1", port: o.port ?? 6379, db: o.db ?? 0 }))
}

/** The servers a command that sees one server only (SCAN, SCRIPT LOAD, INFO) must visit: every master of a Cluster, or the one server. */
export const masters = (conn: RedisConnection): ReadonlyArray<Redis> =>
  conn instanceof Cluster ? conn.nodes("master") : [conn]

/**
 * Where keyless commands that must keep their order go (PUBLISH): the connection itself, or on a Cluster
 * its first master. ioredis sends a keyless command to any node of a Cluster, so two in a row could take
 * different connections and arrive out of order (a Cluster forwards PUBLISH to every node anyway).
 */
export const orderedNode = (conn: RedisConnection): RedisConnection =>
  conn instanceof Cluster ? (conn.nodes("master")[0] ?? conn) : conn

/**
 * Connects; the first failure is returned instead of ioredis' endless reconnect attempts. Connected means
 * `connect()` resolved or the connection said "ready", whichever comes first: ioredis' Cluster never settles
 * `connect()` when its first ready check finds `cluster_state:fail` (a Cluster still converging), although it
 * reconnects and becomes ready (test/faults/cluster-connect.test.ts).
 */
export const connect = (conn: RedisConnection, op = "connect"): Promise<RedisConnection> =>
  new Promise((resolve, reject) => {
    let settled = false
    const onReady = () => {
      if (settled) return
      settled = true
      conn.off("error", onError)
      conn.off("ready", onReady)
      // Later errors are retried by ioredis' reconnect; they must not crash the process.
      conn.on("error", () => {})
      resolve(conn)
    }
    const onError = (err: unknown) => {
      if (settled) return
      settled = true
      conn.off("ready", onReady)
      conn.disconnect()
      reject(toRedisError(op, err))
    }
    conn.once("error", onError)
    conn.once("ready", onReady)
    conn.connect().then(onReady, onError)
  })

export class RedisClient extends Context.Service<RedisClient, {
  /** The shared command connection. */
  readonly conn: RedisConnection
  /** Runs one command (or pipeline) and classifies its failure. */
  readonly use: <A>(op: string, f: (conn: RedisConnection) => Promise<A>) => Effect.Effect<A, RedisError>
  /** A new connection for blocking reads or subscriptions, closed with the scope. */
  readonly dedicated: (name: string) => Effect.Effect<RedisConnection, RedisError, Scope.Scope>
  readonly options: RedisOptions
}>()("factorial/streams/RedisClient") {
  static readonly layer = (options: RedisOptions) =>
    Layer.effect(
      RedisClient,
      Effect.gen(function*() {
        const open = (name: string) =>
          Effect.acquireRelease(
            Effect.tryPromise({
              try: () => connect(makeConnection(options), name),
              catch: (cause) => toRedisError(name, cause)
            }),
            (conn) => Effect.sync(() => conn.disconnect())
          )
        const conn = yield* open("connect")
        return RedisClient.of({
          conn,
          options,
          use: (op, f) => Effect.tryPromise({ try: () => f(conn), catch: (cause) => toRedisError(op, cause) }),
          dedicated: (name) => open(name)
        })
      })
    )
}
