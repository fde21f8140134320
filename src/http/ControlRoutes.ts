/**
 * The control API (`/api/…`): enqueue, status, data, history, cancel, steer. Bodies and params are decoded
 * with Schema once, here; failures go through `HttpError.ts`. Enqueue validates the payload with the
 * registered agent's schema; an agent known only from Redis (registered in another process) takes any JSON.
 */
import { Effect, Schema } from "effect"
import type { FastifyPluginAsync } from "fastify"
import { partitionKeys, allPartitions } from "../../streams/Keys.ts"
import { AgentName } from "../../streams/TaskEvent.ts"
import { BaseAgent } from "../Agent.ts"
import { TaskClient } from "../TaskClient.ts"
import { TaskStore } from "../TaskStore.ts"
import type { AppOptions } from "./App.ts"
import { decoder, responder } from "./Respond.ts"

const EnqueueBody = Schema.Struct({
  agent: AgentName,
  ownerId: Schema.String,
  payload: Schema.Json,
  id: Schema.optionalKey(Schema.String),
  maxRetries: Schema.optionalKey(Schema.Int)
})
const SteerBody = Schema.Struct({ messages: Schema.Array(Schema.Json) })
const HistoryQuery = Schema.Struct({
  start: Schema.optionalKey(Schema.NumberFromString.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))),
  count: Schema.optionalKey(Schema.NumberFromString.check(Schema.isInt(), Schema.isGreaterThan(0)))
})

const decodeEnqueue = decoder(EnqueueBody, "enqueue body")
const decodeSteer = decoder(SteerBody, "steer body")
const decodeHistoryQuery = decoder(HistoryQuery, "history query")

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
