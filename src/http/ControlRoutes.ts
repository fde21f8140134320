/**
 * The control API (`/api/…`): enqueue, status, data, history, cancel, steer, deferred results. Bodies and params are decoded
 * with Schema once, here; failures go through `HttpError.ts`. Enqueue validates the payload with the
 * registered agent's schema; an agent known only from Redis (registered in another process) takes any JSON.
 */
import { Effect, Schema } from "effect"
import type { FastifyPluginAsync } from "fastify"
import { partitionKeys, allPartitions } from "../../streams/Keys.ts"
import { AgentName } from "../../streams/TaskEvent.ts"
import { BaseAgent } from "../Agent.ts"
import { InvalidInput } from "../Errors.ts"
import { TaskClient } from "../TaskClient.ts"
import { TaskStore } from "../TaskStore.ts"
import type { AppOptions } from "./App.ts"
import { decoder, responder } from "./Respond.ts"

/** The header that carries a deferred result's per-call token. */
export const RESULT_TOKEN_HEADER = "x-result-token"

/** A result delivery that presents its per-call token in the header: authorized by that token alone. */
export const isTokenResultDelivery = (method: string, url: string, headers: Record<string, unknown>): boolean =>
  method === "POST" && /^\/api\/tasks\/[^/?]+\/results\/[^/?]+(\?.*)?$/.test(url) &&
  typeof headers[RESULT_TOKEN_HEADER] === "string" && headers[RESULT_TOKEN_HEADER] !== ""

const EnqueueBody = Schema.Struct({
  agent: AgentName,
  ownerId: Schema.String,
  payload: Schema.Json,
  id: Schema.optionalKey(Schema.String),
  maxRetries: Schema.optionalKey(Schema.Int)
})
const SteerBody = Schema.Struct({ messages: Schema.Array(Schema.Json) })
const ResultBody = Schema.Struct({ result: Schema.Json, token: Schema.optionalKey(Schema.String) })
const HistoryQuery = Schema.Struct({
  start: Schema.optionalKey(Schema.NumberFromString.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))),
  count: Schema.optionalKey(Schema.NumberFromString.check(Schema.isInt(), Schema.isGreaterThan(0)))
})

const decodeEnqueue = decoder(EnqueueBody, "enqueue body")
const decodeSteer = decoder(SteerBody, "steer body")
const decodeHistoryQuery = decoder(HistoryQuery, "history query")
const decodeResult = decoder(ResultBody, "result body")

class AgentNotFound extends Schema.TaggedError<AgentNotFound>()("AgentNotFound", { agent: Schema.String }) {
  override get message() {
    return `no agent named ${this.agent} is registered or has a queue`
  }
}

export const controlRoutes = (options: AppOptions): FastifyPluginAsync => async (app) => {
  const respond = responder(options.run)

  /** The registered agent, or a schema-less stand-in for an agent that has queues in Redis. */
  const findAgent = (name: string) =>
    Effect.gen(function*() {
      const local = options.agents().find((a) => a.name === name)
      if (local !== undefined) return local
      const store = yield* TaskStore
      for (const p of allPartitions(store.keyspace)) {
        const known = yield* Effect.promise(() => store.conn.sismember(partitionKeys(store.keyspace, p).agents, name))
        if (known === 1) return new BaseAgent<unknown>({ name, turn: () => Promise.reject(new Error("not runnable here")) })
      }
      return yield* new AgentNotFound({ agent: name })
    })

  app.post("/tasks", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const body = yield* decodeEnqueue(request.body)
        const agent = yield* findAgent(body.agent)
        const client = yield* TaskClient
        const task = agent.createTask({ ownerId: body.ownerId, payload: body.payload, ...(body.id ? { id: body.id } : {}) })
        const id = yield* client.enqueue(agent, task, body.maxRetries === undefined ? {} : { maxRetries: body.maxRetries })
        return { id }
      }),
      201
    ))

  app.get<{ Params: { id: string } }>("/tasks/:id", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const client = yield* TaskClient
        const data = yield* client.getData(request.params.id)
        if (data === null) return yield* Effect.fail({ _tag: "TaskNotFound", message: `task ${request.params.id} not found` })
        return data
      })
    ))

  app.get<{ Params: { id: string } }>("/tasks/:id/status", (request, reply) =>
    respond(reply, Effect.map(TaskClient.use((c) => c.getStatus(request.params.id)), (status) => ({ status }))))

  app.get<{ Params: { id: string } }>("/tasks/:id/history", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const page = yield* decodeHistoryQuery(request.query)
        const client = yield* TaskClient
        return { events: yield* client.getHistory(request.params.id, page) }
      })
    ))

  app.post<{ Params: { id: string } }>("/tasks/:id/cancel", (request, reply) =>
    respond(reply, TaskClient.use((c) => c.cancel(request.params.id))))

  // A deferred result, with the per-call token the task recorded for it (header `x-result-token` or body `token`).
  // The token is required here; with it in the header the route needs no API bearer token (see App.ts).
  app.post<{ Params: { id: string; resultId: string } }>("/tasks/:id/results/:resultId", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const body = yield* decodeResult(request.body)
        const header = request.headers[RESULT_TOKEN_HEADER]
        const token = typeof header === "string" ? header : body.token
        if (token === undefined || token === "") {
          return yield* new InvalidInput({ message: `a result needs its token (header ${RESULT_TOKEN_HEADER} or body "token")` })
        }
        const client = yield* TaskClient
        yield* client.deliverResult(request.params.id, request.params.resultId, body.result, token)
      })
    ))

  app.post<{ Params: { id: string } }>("/tasks/:id/steer", (request, reply) =>
    respond(
      reply,
      Effect.gen(function*() {
        const body = yield* decodeSteer(request.body)
        const client = yield* TaskClient
        yield* client.steer(request.params.id, body.messages)
      })
    ))
}
