/**
 * Test fixtures for the audit tools: drives tasks through every kind of transition with the real Lua
 * scripts (TaskStore.execute, no workers), so their histories and projections are the genuine ones.
 */
import { Effect, Layer, ManagedRuntime, Stream } from "effect"
import type { TaskCommand } from "../../projections/TaskDecider.ts"
import type { Keyspace } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { storeLayer } from "../support/TestRedis.ts"

export type Runtime = ManagedRuntime.ManagedRuntime<TaskStore | RedisClient, unknown>

export const runtimeFor = (ks: Keyspace): Runtime => ManagedRuntime.make(storeLayer(ks) as Layer.Layer<TaskStore | RedisClient, unknown>)

export const exec = (commands: ReadonlyArray<TaskCommand>) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    for (const command of commands) yield* store.execute(command)
  })

const conversation = (n: number) => ({
  messages: Array.from({ length: n }, (_, i) => ({ role: i % 2 === 0 ? "user" : "assistant", content: `m${i}` }))
})

/**
 * Tasks in every reachable state; returns their ids by scenario name. Events are stamped 1 ms apart
 * from `start` (default: a second ago, so that every stamp is in the past for windows ending "now").
 */
export const seed = (prefix: string, start = Date.now() - 1_000) =>
  Effect.gen(function*() {
    const t = (name: string) => `${prefix}-${name}`
    let now = start
    const tick = () => ++now
    const enqueue = (id: string, agent = "chat"): TaskCommand => ({
      _tag: "Enqueue",
      taskId: id,
      agent,
      ownerId: "owner-1",
      payload: conversation(1),
      maxRetries: 2,
      now: tick()
    })
    // queued, never claimed
    yield* exec([enqueue(t("queued"))])
    // a multi-turn conversation, steered, completed
    yield* exec([
      enqueue(t("done")),
      { _tag: "Claim", taskId: t("done"), lease: 0, worker: "w1", now: tick() },
      { _tag: "CompleteTurn", taskId: t("done"), lease: 1, payload: conversation(2), steeringApplied: 0, now: tick() },
      { _tag: "Steer", taskId: t("done"), messages: [{ role: "user", content: "shorter please" }], now: tick() },
      { _tag: "Claim", taskId: t("done"), lease: 1, worker: "w2", now: tick() },
      { _tag: "CompleteTurn", taskId: t("done"), lease: 2, payload: conversation(4), steeringApplied: 1, now: tick() },
      { _tag: "Claim", taskId: t("done"), lease: 2, worker: "w1", now: tick() },
      { _tag: "Complete", taskId: t("done"), lease: 3, output: { answer: 42 }, steeringApplied: 0, now: tick() }
    ])
    // processing, with a pending steering message and a requested cancel
    yield* exec([
      enqueue(t("running"), "tools"),
      { _tag: "Claim", taskId: t("running"), lease: 0, worker: "w3", now: tick() },
      { _tag: "Steer", taskId: t("running"), messages: ["hurry"], now: tick() },
      { _tag: "Cancel", taskId: t("running"), now: tick() }
    ])
    // failed once, in backoff
    yield* exec([
      enqueue(t("backoff")),
      { _tag: "Claim", taskId: t("backoff"), lease: 0, worker: "w1", now: tick() },
      {
        _tag: "Fail",
        taskId: t("backoff"),
        lease: 1,
        error: { message: "rate limited", kind: "transient" },
        retry: "backoff",
        retryAt: now + 60_000,
        now: tick()
      }
    ])
    // failed for good
    yield* exec([
      enqueue(t("failed"), "tools"),
      { _tag: "Claim", taskId: t("failed"), lease: 0, worker: "w1", now: tick() },
      { _tag: "Fail", taskId: t("failed"), lease: 1, error: { message: "bad", kind: "fatal" }, retry: "fatal", retryAt: 0, now: tick() }
    ])
    // cancelled while queued
    yield* exec([enqueue(t("cancelled")), { _tag: "Cancel", taskId: t("cancelled"), now: tick() }])
    // completed, then expired (hash gone, history kept)
    yield* exec([
      enqueue(t("expired")),
      { _tag: "Claim", taskId: t("expired"), lease: 0, worker: "w1", now: tick() },
      { _tag: "Complete", taskId: t("expired"), lease: 1, output: "bye", steeringApplied: 0, now: tick() },
      { _tag: "Expire", taskId: t("expired"), now: tick() }
    ])
    // a conversation checkpointed as what each turn appended (ADR 0018), claimed again: its payload is a chain
    const appended = (from: number, to: number) => ({ append: { messages: conversation(to).messages.slice(from) } })
    yield* exec([
      enqueue(t("chain")),
      { _tag: "Claim", taskId: t("chain"), lease: 0, worker: "w1", now: tick() },
      { _tag: "CompleteTurn", taskId: t("chain"), lease: 1, payloadDelta: appended(1, 2), steeringApplied: 0, now: tick() },
      { _tag: "Claim", taskId: t("chain"), lease: 1, worker: "w2", now: tick() },
      { _tag: "CompleteTurn", taskId: t("chain"), lease: 2, payloadDelta: appended(2, 4), steeringApplied: 0, now: tick() },
      { _tag: "Claim", taskId: t("chain"), lease: 2, worker: "w1", now: tick() }
    ])
    return {
      ids: ["queued", "done", "running", "backoff", "failed", "cancelled", "expired", "chain"].map(t),
      t,
      lastAt: now
    }
  })

export const collectText = <E, R>(s: Stream.Stream<string, E, R>) =>
  Effect.map(Stream.runCollect(s), (chunks) => chunks.join(""))

/** Runs raw commands on the test connection (to corrupt a projection on purpose). */
export const redisDo = <A>(f: (c: RedisClient["Service"]["conn"]) => Promise<A>) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    return yield* redis.use("test", f)
  })

export const liveState = (taskId: string) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    return yield* store.getState(taskId)
  })
