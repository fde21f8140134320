/**
 * Builds the HTTP server (fastify) without listening: the control API under `/api`, `/health`, and the
 * routes other modules add (the dashboard). Safe defaults: bounded bodies (413), a bearer token on every
 * API route when one is configured (401), JSON errors from the one table in `HttpError.ts`.
 */
import { timingSafeEqual } from "node:crypto"
import Fastify, { type FastifyInstance } from "fastify"
import { Effect, type Exit } from "effect"
import type { BaseAgent } from "../Agent.ts"
import type { ObservabilityConfig } from "../Config.ts"
import type { TaskClient } from "../TaskClient.ts"
import type { TaskStore } from "../TaskStore.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { controlRoutes, isTokenResultDelivery } from "./ControlRoutes.ts"
import { sendError } from "./HttpError.ts"

export type HttpServices = TaskClient | TaskStore | RedisClient

/** Runs an Effect with the orchestrator's services and returns its Exit. */
export type RunExit = <A, E>(effect: Effect.Effect<A, E, HttpServices>) => Promise<Exit.Exit<A, E>>

export interface AppOptions {
  readonly run: RunExit
  readonly config: ObservabilityConfig
  /** Agents registered in this process (their payload schemas validate enqueues). */
  readonly agents: () => ReadonlyArray<BaseAgent<any>>
  /** Largest accepted request body, in bytes. */
  readonly bodyLimit?: number
}

const tokenMatches = (header: string | undefined, token: string): boolean => {
  const given = Buffer.from(header?.startsWith("Bearer ") ? header.slice(7) : "")
  const expected = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

export const buildApp = (options: AppOptions): FastifyInstance => {
  const app = Fastify({ bodyLimit: options.bodyLimit ?? 1024 * 1024, logger: false })
  const token = options.config.authToken

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
    const guarded = (request.url.startsWith("/api/") || request.url.startsWith("/observability/api/")) &&
      !isTokenResultDelivery(request.method, request.url, request.headers)
    if (token !== undefined && guarded && request.method !== "OPTIONS") {
      const header = request.headers.authorization ?? (request.query as { token?: string } | undefined)?.token
      const given = header?.startsWith("Bearer ") ? header : header === undefined ? undefined : `Bearer ${header}`
      if (!tokenMatches(given, token)) {
        return sendError(reply, { _tag: "Unauthorized", message: "missing or wrong bearer token" })
      }
    }
  })

  app.get("/health", async (_request, reply) => {
    const exit = await options.run(Effect.gen(function*() {
      const redis = yield* RedisClient
      return yield* redis.use("ping", (c) => c.ping())
    }))
    return exit._tag === "Success" ? { status: "ok" } : reply.code(503).send({ status: "unavailable" })
  })

  app.register(controlRoutes(options), { prefix: "/api" })
  return app
}
