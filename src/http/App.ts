/**
 * Builds the HTTP server (fastify) without listening: the control API under `/api`, `/health`, the
 * dashboard (`/observability`), its JSON API and live events (`/observability/api`) and `/metrics`.
 * Safe defaults: bounded bodies (413), a bearer token on every API route and `/metrics` when one is
 * configured (401), CORS only for the configured origins, JSON errors from the one table in `HttpError.ts`.
 */
import { timingSafeEqual } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Socket } from "node:net"
import Fastify, { type FastifyInstance } from "fastify"
import { Effect, type Exit } from "effect"
import type { RunnableAgent } from "../Agent.ts"
import type { ObservabilityConfig } from "../Config.ts"
import type { TaskClient } from "../TaskClient.ts"
import type { TaskStore } from "../TaskStore.ts"
import type { Gauges } from "../../projections/Gauges.ts"
import type { MetricsProjector } from "../../projections/Projector.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { controlRoutes, isTokenResultDelivery } from "./ControlRoutes.ts"
import { dashboardRoutes } from "./Dashboard.ts"
import { sendError } from "./HttpError.ts"
import { liveRoute, type LiveRouteOptions } from "./LiveRoute.ts"
import { observabilityRoutes } from "./ObservabilityRoutes.ts"
import { prometheusRoute } from "./Prometheus.ts"

export type HttpServices = TaskClient | TaskStore | RedisClient | MetricsProjector | Gauges

/** Runs an Effect with the orchestrator's services and returns its Exit. */
export type RunExit = <A, E>(effect: Effect.Effect<A, E, HttpServices>) => Promise<Exit.Exit<A, E>>

export interface AppOptions {
  readonly run: RunExit
  readonly config: ObservabilityConfig
  /** Agents registered in this process (their payload schemas validate enqueues). */
  readonly agents: () => ReadonlyArray<RunnableAgent>
  /** Largest accepted request body, in bytes. */
  readonly bodyLimit?: number
  /** Server-Sent Events: heartbeat interval and the most streams open at once. */
  readonly live?: LiveRouteOptions
  /**
   * How long a queue consumer with no registration in `{ns}:consumers` (a process of an older version) may
   * be idle and still count as a live worker, ms (default `LIVE_WITHIN_MS`, 30 s; tests set less).
   */
  readonly liveWithinMs?: number
}

/** Paths that need the token when one is configured (the dashboard page itself does not: it asks for it). */
const isGuarded = (url: string): boolean =>
  url.startsWith("/api/") || url.startsWith("/observability/api/") || url === "/metrics" ||
  url.startsWith("/metrics?")

const tokenMatches = (header: string | undefined, token: string): boolean => {
  const given = Buffer.from(header?.startsWith("Bearer ") ? header.slice(7) : "")
  const expected = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

/**
 * A closing server must not wait on connections that carry no request: a browser's spare (preconnected)
 * socket or a keep-alive socket between requests counts as busy for Node until its headers timeout, so
 * `close()` would hang for a minute. On close every such socket is destroyed at once, and a socket whose
 * request (or live stream) is still running is destroyed when that response ends.
 */
const closeQuietly = (app: FastifyInstance) => {
  const inFlight = new Map<Socket, number>()
  let closing = false
  app.server.on("connection", (socket: Socket) => {
    inFlight.set(socket, 0)
    socket.once("close", () => inFlight.delete(socket))
  })
  app.server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1)
    response.once("close", () => {
      const n = (inFlight.get(socket) ?? 1) - 1
      inFlight.set(socket, n)
      if (closing && n === 0) socket.destroy()
    })
  })
  app.addHook("preClose", async () => {
    closing = true
    for (const [socket, n] of inFlight) if (n === 0) socket.destroy()
  })
}

export const buildApp = (options: AppOptions): FastifyInstance => {
  const app = Fastify({ bodyLimit: options.bodyLimit ?? 1024 * 1024, logger: false })
  const token = options.config.authToken
  closeQuietly(app)

  app.setErrorHandler((error: { statusCode?: number; message: string; code?: string }, _request, reply) => {
    if (error.statusCode === 413) return sendError(reply, { _tag: "PayloadTooLarge", message: "request body too large" })
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendError(reply, { _tag: "InvalidInput", message: error.message })
    }
    return sendError(reply, error)
  })
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ error: { tag: "NotFound", message: `no route ${request.method} ${request.url}` } })
  )

  app.addHook("onRequest", async (request, reply) => {
    const origin = request.headers.origin
    if (origin !== undefined && options.config.corsOrigins.includes(origin)) {
      reply.header("access-control-allow-origin", origin)
      reply.header("vary", "origin")
    }
    // A deferred result that presents its per-call token is authorized by it (checked atomically with the
    // delivery): a webhook or an approval link can deliver one result without holding the API token.
    const guarded = isGuarded(request.url) && !isTokenResultDelivery(request.method, request.url, request.headers)
    if (token !== undefined && guarded && request.method !== "OPTIONS") {
      const header = request.headers.authorization ?? (request.query as { token?: string } | undefined)?.token
      const given = header?.startsWith("Bearer ") ? header : header === undefined ? undefined : `Bearer ${header}`
      if (!tokenMatches(given, token)) {
        return sendError(reply, { _tag: "Unauthorized", message: "missing or wrong bearer token" })
      }
    }
  })

  // CORS preflight for the configured origins (the onRequest hook above already set the allow-origin).
  app.options("/*", (request, reply) => {
    const origin = request.headers.origin
    if (origin === undefined || !options.config.corsOrigins.includes(origin)) return reply.code(404).send()
    return reply
      .code(204)
      .header("access-control-allow-methods", "GET, POST, OPTIONS")
      .header("access-control-allow-headers", "authorization, content-type, last-event-id")
      .header("access-control-max-age", "600")
      .send()
  })

  app.get("/health", async (_request, reply) => {
    const exit = await options.run(Effect.gen(function*() {
      const redis = yield* RedisClient
      return yield* redis.use("ping", (c) => c.ping())
    }))
    return exit._tag === "Success" ? { status: "ok" } : reply.code(503).send({ status: "unavailable" })
  })

  app.register(controlRoutes(options), { prefix: "/api" })
  app.register(observabilityRoutes(options), { prefix: "/observability/api" })
  app.register(liveRoute(options, options.live), { prefix: "/observability/api" })
  app.register(prometheusRoute(options))
  app.register(dashboardRoutes(options))
  return app
}
