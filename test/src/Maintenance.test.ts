/**
 * Maintenance against a real Redis (standalone, and the cluster project's 4 partitions):
 * - expiry drains a backlog of finished tasks past their TTL that is many times `maxCleanupBatch` in one
 *   pass (within `expiryBudget`), and still keeps each status's TTL and the history's own TTL;
 * - dead consumers are deleted from the queue groups: one with nothing pending, idle past the threshold and
 *   not registered by a live process goes; a registered (live) one stays however long it has been idle (on
 *   Redis 7.0 an idle live worker's `idle` keeps growing), and one with pending entries stays until
 *   recovery has taken them.
 * - the partition log is trimmed by age, never past what the projector's group has not delivered nor past
 *   the projector's checkpoint (it reads with NOACK: what it read but never committed is pending nowhere).
 * Thresholds are tiny (heartbeat timeout 0.3 s, interval 0.2 s: consumers are dead after 2.5 s); nothing is
 * asserted about timing, the tests only wait until the threshold has passed.
 */
import { hostname } from "node:os"
import { afterAll, describe, expect, it } from "vitest"
import { Effect, Layer } from "effect"
import type { TaskCommand } from "../../projections/TaskDecider.ts"
import { defineAgent, Done } from "../../src/Agent.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig, TaskTTLConfig } from "../../src/Config.ts"
import { deadConsumerAfterMs, deleteIdleConsumers, maintainOnce, trimEventLog } from "../../src/Maintenance.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { ensureGroups } from "../../src/Worker.ts"
import { allPartitions, namespaceKeys, partitionKeys, partitionOf, PROJECTOR_GROUP, taskKeys } from "../../streams/Keys.ts"
import type { Keyspace } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { orchestrators, waitFor } from "../support/Orchestrators.ts"
import { freshKeyspace, rawClient, storeLayer, testPartitions } from "../support/TestRedis.ts"

const make = orchestrators()
const conn = rawClient()
afterAll(() => conn.disconnect())

interface Consumer {
  readonly name: string
  readonly pending: number
  readonly idle: number
}

/** The consumers of a group in every partition (none where the stream or group does not exist). */
const consumersOf = async (keyspace: Keyspace, stream: (p: number) => string, group: string): Promise<Array<Consumer>> =>
  (await Promise.all(allPartitions(keyspace).map(async (p) => {
    const reply = (await conn.call("XINFO", "CONSUMERS", stream(p), group).catch(() => [])) as Array<Array<unknown>>
    return reply.map((flat) => {
      const f: Record<string, unknown> = {}
      for (let i = 0; i + 1 < flat.length; i += 2) f[String(flat[i])] = flat[i + 1]
      return { name: String(f.name), pending: Number(f.pending), idle: Number(f.idle) }
    })
  }))).flat()

const queueConsumers = (keyspace: Keyspace, agent: string) =>
  consumersOf(keyspace, (p) => partitionKeys(keyspace, p).queue(agent), agent)

/** A consumer in `agent`'s group of partition `p` that read one entry (left pending unless `ack`). */
const readOne = async (keyspace: Keyspace, p: number, agent: string, name: string, ack: boolean) => {
  const k = partitionKeys(keyspace, p)
  await conn.sadd(k.agents, agent)
  await ensureGroups(conn, [k.queue(agent)], agent)
  const id = await conn.xadd(k.queue(agent), "*", "t", `probe-${name}`, "l", "0")
  const read = (await conn.xreadgroup("GROUP", agent, name, "COUNT", 1, "STREAMS", k.queue(agent), ">")) as Array<
    [string, Array<[string, Array<string>]>]
  >
  expect(read[0]![1][0]![0]).toBe(id)
  if (ack) await conn.xack(k.queue(agent), agent, id!)
}

describe("maintenance", () => {
  it("trims the partition log by age, never past the projector's checkpoint", async () => {
    const k = partitionKeys(freshKeyspace(), 0)
    // 600 entries from 1970 (all past any retention), in stream nodes of 100.
    const add = conn.pipeline()
    for (let i = 1; i <= 600; i++) add.xadd(k.events, `${i}-0`, "e", "{}")
    await add.exec()
    // The projector's group delivered them all (NOACK: none pending); it committed up to 250-0, then crashed.
    await conn.xgroup("CREATE", k.events, PROJECTOR_GROUP, "0")
    await conn.call("XREADGROUP", "GROUP", PROJECTOR_GROUP, "crashed", "COUNT", 1000, "NOACK", "STREAMS", k.events, ">")
    const field = "metrics:v1:live:60s"
    await conn.hset(k.checkpoints, field, "250-0")
    const first = async () => (await conn.xrange(k.events, "-", "+", "COUNT", 1))[0]![0]

    await Effect.runPromise(trimEventLog(conn, k, Date.now(), { projectorGroup: PROJECTOR_GROUP, projectorCheckpointField: field }))
    // Approximate trimming removes whole nodes: those before the checkpoint's go, the checkpoint's stays.
    expect(await first()).toBe("201-0")
    // The group alone would have let the uncommitted entries go.
    await Effect.runPromise(trimEventLog(conn, k, Date.now(), { projectorGroup: PROJECTOR_GROUP }))
    expect(Number((await first()).split("-")[0])).toBeGreaterThan(250)
  })

  it("drains an expiry backlog bigger than maxCleanupBatch in one pass, keeping the TTLs", async () => {
    const keyspace = freshKeyspace()
    const batch = 10
    const program = Effect.gen(function*() {
      const store = yield* TaskStore
      const { conn } = yield* RedisClient
      const now = Date.now()
      // 30 × batch tasks cancelled a minute ago (past the 30 s TTL), 20 cancelled just now (not yet).
      const old = Array.from({ length: 30 * batch }, (_, i) => `old-${i}`)
      const recent = Array.from({ length: 20 }, (_, i) => `recent-${i}`)
      const setUp = (ids: ReadonlyArray<string>, at: number) =>
        Effect.gen(function*() {
          yield* store.executeMany(ids.map((taskId) => ({
            command: { _tag: "Enqueue", taskId, agent: "a", ownerId: "o", payload: null, maxRetries: 0, now: at } satisfies TaskCommand
          })))
          const cancels = yield* store.executeMany(ids.map((taskId) => ({
            command: { _tag: "Cancel", taskId, now: at } satisfies TaskCommand
          })))
          expect(cancels.every((c) => "values" in c)).toBe(true)
        })
      yield* setUp(old, now - 60_000)
      yield* setUp(recent, now)

      const config = (expiryBudget: number) =>
        new MaintenanceWorkerConfig({
          maxCleanupBatch: batch,
          expiryBudget,
          taskTtl: new TaskTTLConfig({ cancelledTtl: 30, historyTtl: 3600 })
        })
      const cancelledLeft = () =>
        Effect.promise(() =>
          Promise.all(allPartitions(keyspace).map((p) => conn.zcount(partitionKeys(keyspace, p).index("cancelled"), "(-inf", "+inf")))
        ).pipe(Effect.map((counts) => counts.reduce((a, b) => a + b, 0)))

      // Without a budget a pass expires one batch per partition, as before.
      const first = yield* maintainOnce({ agents: [], config: config(0), workerId: "m1" })
      expect(first.expired).toBeLessThanOrEqual(batch * keyspace.partitions)
      expect(first.expired).toBeGreaterThan(0)

      // With one (generous, so a slow machine still finishes), one pass drains the rest.
      const second = yield* maintainOnce({ agents: [], config: config(60), workerId: "m1" })
      expect(first.expired + second.expired).toBe(old.length)
      expect(yield* cancelledLeft()).toBe(recent.length)

      for (const id of [old[0]!, old[old.length - 1]!]) {
        expect(yield* store.getStatus(id)).toBe("expired")
        const ttl = yield* Effect.promise(() => conn.ttl(taskKeys(keyspace, id).log))
        expect(ttl).toBeGreaterThan(0)
        expect(ttl).toBeLessThanOrEqual(3600)
      }
      for (const id of recent) expect(yield* store.getStatus(id)).toBe("cancelled")
    })
    await Effect.runPromise(program.pipe(Effect.provide(Layer.fresh(storeLayer(keyspace)))))
  })

  it("sweeps consumers with nothing pending, idle past the threshold and not registered as live", async () => {
    const keyspace = freshKeyspace()
    // No agent of its own, so no recovery here (that would take `busy`'s entry): the sweep still covers the
    // groups of the agents in each partition's `agents` set.
    const agents: Array<{ name: string; heartbeatTimeout: number }> = []
    const config = new MaintenanceWorkerConfig({ interval: 0.4 })
    const deadAfter = deadConsumerAfterMs({ agents, config })
    const registry = namespaceKeys(keyspace).consumers
    const p = keyspace.partitions - 1
    await readOne(keyspace, p, "a", "dead-1", true)
    await readOne(keyspace, p, "a", "dead-2", true)
    await readOne(keyspace, p, "a", "expired", true)
    await readOne(keyspace, p, "a", "stopped", true)
    await readOne(keyspace, p, "a", "alive", true)
    await readOne(keyspace, p, "a", "busy", false)
    await conn.zadd(registry, String(Date.now() + 60_000), "alive", String(Date.now() - 60_000), "expired")
    const sweep = (sweepConsumers: boolean) =>
      Effect.runPromise(
        maintainOnce({ agents, config, workerId: "m1" }, { sweepConsumers }).pipe(Effect.provide(Layer.fresh(storeLayer(keyspace))))
      )
    // Too young to be dead: nothing goes.
    expect((await sweep(true)).consumersDeleted).toBe(0)
    await waitFor(() => queueConsumers(keyspace, "a"), (cs) => cs.every((c) => c.idle > deadAfter), 15_000)
    // A pass that does not sweep leaves them all.
    expect((await sweep(false)).consumersDeleted).toBe(0)
    // A clean stop marks its names lapsed at once: that does not protect its consumer.
    await conn.zadd(registry, String(Date.now()), "stopped")
    expect((await sweep(true)).consumersDeleted).toBe(4)
    const left = await queueConsumers(keyspace, "a")
    expect(left.map((c) => c.name).sort()).toEqual(["alive", "busy"])
    expect(left.find((c) => c.name === "busy")?.pending).toBe(1)
    // The registration lapsed more than a threshold ago went with the sweep; the live one stays, and so
    // does the one that just lapsed, for another threshold (the gauges know its worker as stopped).
    expect(await conn.zrange(registry, "0", "-1")).toEqual(["stopped", "alive"])

    // The deleting script itself checks pending entries (a consumer may read between listing and delete).
    const queue = partitionKeys(keyspace, p).queue("a")
    const deleted = await Effect.runPromise(
      deleteIdleConsumers(queue, "a", ["busy", "alive", "never-existed"]).pipe(Effect.provide(Layer.fresh(storeLayer(keyspace))))
    )
    expect(deleted).toBe(1)
    expect((await queueConsumers(keyspace, "a")).map((c) => c.name)).toEqual(["busy"])
  }, 30_000)

  it("deletes a stopped worker's consumer, keeps a live one, and a dead one with pending entries until recovered", async () => {
    const { namespace } = freshKeyspace()
    const keyspace = { namespace, partitions: testPartitions }
    // Heartbeat timeout 0.3 s, interval 0.2 s: a consumer is dead after 2.5 s.
    const fast = new AgentWorkerConfig({ heartbeatInterval: 0.1, missedHeartbeatsThreshold: 2, missedHeartbeatsGracePeriod: 0.1 })
    const quick = new MaintenanceWorkerConfig({ interval: 0.2 })
    const deadAfter = deadConsumerAfterMs({ agents: [{ name: "x", heartbeatTimeout: fast.heartbeatTimeout }], config: quick })
    const agent = (name: string) => defineAgent({ name, turn: () => Promise.resolve(Done("ok")) })
    const [a, b, c] = [agent("a"), agent("b"), agent("c")]
    const workerOf = async (o: ReturnType<typeof make>, taskId: string) => {
      const claimed = (await o.getTaskHistory(taskId)).find((e) => e.event._tag === "TaskClaimed")?.event
      return claimed?._tag === "TaskClaimed" ? claimed.worker : ""
    }
    const run = async (o: ReturnType<typeof make>, which: typeof a) => {
      const id = await o.enqueueTask(which, which.createTask({ ownerId: "u", payload: {} }))
      await waitFor(() => o.getTaskStatus(id), (s) => s === "completed")
      return { id, worker: await workerOf(o, id) }
    }

    // A worker of `b` that died between reading its entry and claiming it: the entry is pending with it.
    const client = make(namespace)
    const orphan = await client.enqueueTask(b, b.createTask({ ownerId: "u", payload: {} }))
    const orphanQueue = partitionKeys(keyspace, partitionOf(keyspace, orphan)).queue("b")
    await ensureGroups(conn, [orphanQueue], "b")
    await conn.xreadgroup("GROUP", "b", "ghost", "COUNT", 10, "STREAMS", orphanQueue, ">")

    // A live worker of `a`, which ran one task (so it has a consumer) and then sits idle.
    const live = make(namespace).registerRunner({ agent: a, agentWorkerConfig: fast, maintenanceWorkerConfig: quick })
    await live.start()
    const liveWorker = (await run(live, a)).worker

    // A worker of `c` that ran one task, later than the live one's, and stopped.
    const stopped = make(namespace).registerRunner({ agent: c, agentWorkerConfig: fast, maintenanceWorkerConfig: quick })
    await stopped.start()
    const stoppedWorker = (await run(stopped, c)).worker
    await stopped.stop()
    expect((await queueConsumers(keyspace, "c")).map((x) => x.name)).toEqual([stoppedWorker])
    // The clean stop marked its names lapsed.
    const stoppedUntil = await conn.zscore(namespaceKeys(keyspace).consumers, stoppedWorker)
    expect(stoppedUntil).not.toBeNull()
    expect(Number(stoppedUntil)).toBeLessThanOrEqual(Date.now())

    // The live process's maintenance deletes the stopped worker's consumer once it is idle past the threshold.
    await waitFor(() => queueConsumers(keyspace, "c"), (cs) => cs.length === 0, 20_000)
    // By then the live worker's consumer (idle since an earlier delivery) and the ghost were past the
    // threshold too, on Redis 7.0; both were kept: one is registered, the other holds an entry.
    expect((await queueConsumers(keyspace, "a")).map((x) => x.name)).toEqual([liveWorker])
    const ghost = (await queueConsumers(keyspace, "b")).find((x) => x.name === "ghost")
    expect(ghost?.pending).toBe(1)
    expect(ghost!.idle).toBeGreaterThan(deadAfter)
    const projectorConsumers = await consumersOf(keyspace, (p) => partitionKeys(keyspace, p).events, PROJECTOR_GROUP)
    expect(projectorConsumers.map((x) => x.name)).toContain(`${hostname()}-${process.pid}`)

    // A worker of `b` starts: its maintenance recovers the ghost's entry and its worker runs the task;
    // then the ghost, with nothing pending, is deleted.
    const recovering = make(namespace).registerRunner({ agent: b, agentWorkerConfig: fast, maintenanceWorkerConfig: quick })
    await recovering.start()
    await waitFor(() => recovering.getTaskStatus(orphan), (s) => s === "completed")
    await waitFor(() => queueConsumers(keyspace, "b"), (cs) => !cs.some((x) => x.name === "ghost"), 20_000)
    expect((await queueConsumers(keyspace, "b")).map((x) => x.name)).toContain(await workerOf(recovering, orphan))
  }, 60_000)
})
