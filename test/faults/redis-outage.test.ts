/**
 * Proves that Redis outages lose and duplicate nothing, with real worker processes against a PRIVATE
 * redis-server (its own loopback port, started and killed by pid here):
 * 1. connections dropped (CLIENT KILL of every normal and pub/sub client, several times mid-run): the
 *    workers reconnect by themselves and every task finishes;
 * 2. Redis itself killed (SIGKILL) and restarted mid-run with an append-only file fsynced on every write:
 *    the function library comes back with the data (Redis keeps it in the AOF), the workers resume, and
 *    no task's terminal transition is lost or duplicated;
 * 3. the function library dropped (FUNCTION FLUSH) mid-run, as a server restarted without persistence or
 *    an operator would leave it: the first call to miss a function loads the library again and is sent again;
 * 4. Redis full (`maxmemory` reached with `noeviction`, as docs/operations.md advises) mid-run: every write is
 *    refused with OOM for a while; once there is room again, the workers, maintenance and the metrics
 *    projectors all resume by themselves (the projection catches up to the log's end).
 * In all four, every task ends with exactly one terminal event and its history folds to its status hash.
 */
import { afterAll, describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { ObservabilityConfig } from "../../src/Config.ts"
import { partitionKeys } from "../../streams/Keys.ts"
import { compareIds } from "../../streams/StreamId.ts"
import {
  cleanupAll,
  faultAgent,
  Orchestrator,
  readTasks,
  sleep,
  spawnWorker,
  startPrivateRedis,
  statuses,
  summary,
  verify,
  waitAllTerminal,
  waitFor,
  type WorkerProcess,
  expectAllCompletedOnce
} from "./harness.ts"

const timing = { HB_INTERVAL: 0.2, HB_THRESHOLD: 2, HB_GRACE: 0.2, MAINT_INTERVAL: 0.2, WORKERS: 8, BATCH: 8 }
const TASKS = Number(process.env.OUTAGE_TASKS ?? 300)
const clients: Array<Orchestrator> = []

afterAll(async () => {
  await Promise.all(clients.map((c) => c.stop()))
  await cleanupAll() // workers and private servers (the namespaces die with their server)
})

const enqueueMix = async (client: Orchestrator, prefix: string) => {
  const ids = Array.from({ length: TASKS }, (_, i) => `${prefix}-${i}`)
  const results = await client.enqueueTasks(
    faultAgent,
    ids.map((id, i) => faultAgent.createTask({ id, ownerId: "faults", payload: { turns: 1 + (i % 3), done: 0, workMs: 5 } })),
    { maxRetries: 100 }
  )
  expect(results.filter((r) => r.error !== undefined)).toEqual([])
  return ids
}

const doneCount = async (client: Orchestrator, ids: ReadonlyArray<string>) =>
  (await statuses(client, ids)).filter((s) => s === "completed").length

/** `n` worker processes; the odd ones store checkpoints as deltas (ADR 0018), so tasks cross between the two forms. */
const startWorkers = (url: string, namespace: string, n: number): Promise<Array<WorkerProcess>> =>
  Promise.all(Array.from({ length: n }, (_, i) =>
    spawnWorker({ label: `W${i}`, redisUrl: url, namespace, env: { ...timing, CHECKPOINT_DELTAS: i % 2 } })))

const warnings = (workers: ReadonlyArray<WorkerProcess>) => workers.flatMap((w) => w.lines.filter((l) => l.includes("WARN") || l.includes("ERROR")))

/** The kinds of warnings the workers logged, with counts (task ids and leases masked). */
const warningKinds = (workers: ReadonlyArray<WorkerProcess>) => {
  const kinds = new Map<string, number>()
  for (const line of warnings(workers)) {
    const kind = line.replace(/^\[[^\]]*\] /, "").replace(/\(#\d+\)/, "").replace(/\b(drop|restart)-\d+\b/g, "<task>").replace(/\d+/g, "N").slice(0, 120)
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
  }
  return [...kinds].map(([k, n]) => `${n}× ${k}`).join("; ")
}

/** A private Redis (with an AOF when asked), a client of namespace `faults-<label>` with the tasks enqueued, and `n` worker processes. */
const scenario = async (label: string, n: number, options: { readonly aof?: boolean } = {}) => {
  const redis = await startPrivateRedis(options)
  const namespace = `faults-${label}`
  const client = new Orchestrator({ redisUrl: redis.url, namespace })
  clients.push(client)
  const ids = await enqueueMix(client, label)
  const workers = await startWorkers(redis.url, namespace, n)
  return { redis, client, ids, workers }
}

describe("Redis outages", () => {
  it("connections dropped mid-run: workers reconnect by themselves and every task finishes once", async () => {
    const { redis, client, ids, workers } = await scenario("drop", 3)
    const admin = new Redis(redis.url)
    const t0 = Date.now()
    let drops = 0
    let killedClients = 0
    try {
      for (let round = 0; round < 6; round++) {
        await waitFor(() => doneCount(client, ids), (n) => n >= ((round + 1) * TASKS) / 8, 30_000, `progress before drop ${round + 1}`)
        killedClients += Number(await admin.call("CLIENT", "KILL", "TYPE", "normal"))
        killedClients += Number(await admin.call("CLIENT", "KILL", "TYPE", "pubsub"))
        drops++
      }
    } finally {
      admin.disconnect()
    }
    await waitAllTerminal(client, ids, 60_000)
    const v = verify(await readTasks(client, ids))
    console.log(`[redis-drop] ${summary(v)}; drops=${drops} (${killedClients} connections killed); ${Date.now() - t0} ms; worker warnings: ${warningKinds(workers) || "none"}`)
    expectAllCompletedOnce(v, ids.length)
    expect(workers.every((w) => w.alive())).toBe(true)
    expect(warnings(workers).filter((l) => l.includes("ERROR"))).toEqual([])
  }, 120_000)

  it("Redis killed and restarted with AOF mid-run: no terminal transition lost or duplicated", async () => {
    const { redis, client, ids, workers } = await scenario("restart", 3, { aof: true })
    const t0 = Date.now()
    let restarts = 0
    for (const fraction of [0.25, 0.6]) {
      await waitFor(() => doneCount(client, ids), (n) => n >= fraction * TASKS, 60_000, `progress before restart ${restarts + 1}`)
      await redis.kill()
      await sleep(700)
      await redis.restart()
      restarts++
    }
    await waitAllTerminal(client, ids, 90_000)
    const v = verify(await readTasks(client, ids))
    console.log(`[redis-restart] ${summary(v)}; restarts=${restarts}; ${Date.now() - t0} ms; worker warnings: ${warningKinds(workers) || "none"}`)
    expectAllCompletedOnce(v, ids.length)
    expect(workers.every((w) => w.alive())).toBe(true)
    expect(warnings(workers).filter((l) => l.includes("Function not found") || l.includes("ERROR"))).toEqual([])
  }, 180_000)

  it("Redis full (maxmemory, noeviction) mid-run: writes refused with OOM, then everything resumes once there is room", async () => {
    const { redis, client, ids, workers } = await scenario("full", 2)
    const admin = new Redis(redis.url)
    const keys = partitionKeys({ namespace: "faults-full", partitions: 1 }, 0)
    client.registerRunner({ agent: faultAgent })
    const app = client.createObservabilityApp(new ObservabilityConfig({}))
    await app.ready()
    const lateTask = { turns: 1, done: 0, workMs: 1 }
    let httpWhileFull: unknown
    let refused = ""
    try {
      await admin.config("SET", "maxmemory-policy", "noeviction")
      await waitFor(() => doneCount(client, ids), (n) => n >= 0.3 * TASKS, 60_000, "progress before Redis fills up")
      // Full: the limit under what Redis uses now, so every write (function call, XADD, HSET …) is refused.
      const used = Number(/used_memory:(\d+)/.exec(await admin.info("memory"))![1])
      await admin.config("SET", "maxmemory", String(Math.max(1024 * 1024, Math.floor(used / 2))))
      refused = await admin.call("HSET", "probe", "f", "v").then(() => "", (e: Error) => e.message)
      // An enqueue over HTTP meanwhile: 503 with Retry-After (sending it again soon can succeed).
      const full = await app.inject({ method: "POST", url: "/api/tasks", payload: { agent: "fault", ownerId: "faults", payload: lateTask } })
      httpWhileFull = { status: full.statusCode, retryAfter: full.headers["retry-after"], tag: (full.json() as { error: { tag: string } }).error.tag }
      await sleep(1_500) // past the heartbeat threshold: workers, maintenance and projectors all meet OOM
      await admin.config("SET", "maxmemory", "0")
    } finally {
      admin.disconnect()
    }
    expect(refused).toMatch(/^OOM/)
    expect(httpWhileFull).toEqual({ status: 503, retryAfter: "1", tag: "RedisError" })
    const again = await app.inject({ method: "POST", url: "/api/tasks", payload: { agent: "fault", ownerId: "faults", payload: lateTask } })
    expect(again.statusCode).toBe(201)
    await app.close()
    ids.push((again.json() as { id: string }).id)
    await waitAllTerminal(client, ids, 60_000)
    const v = verify(await readTasks(client, ids))
    console.log(`[redis-full] ${summary(v)}; worker warnings: ${warningKinds(workers) || "none"}`)
    expectAllCompletedOnce(v, ids.length)
    expect(workers.every((w) => w.alive())).toBe(true)
    // The metrics projectors resumed: the live checkpoint reaches the log's last entry.
    const probe = new Redis(redis.url)
    try {
      const last = (await probe.xrevrange(keys.events, "+", "-", "COUNT", 1))[0]![0]
      await waitFor(async () => Object.values(await probe.hgetall(keys.checkpoints)), (cs) => cs.some((c) => compareIds(c, last) >= 0), 20_000, `metrics checkpoint at ${last}`)
    } finally {
      probe.disconnect()
    }
    expect(warnings(workers).filter((l) => l.includes("ERROR"))).toEqual([])
  }, 120_000)

  it("function library dropped mid-run (FUNCTION FLUSH): the calls load it again and every task finishes once", async () => {
    const { redis, client, ids, workers } = await scenario("flush", 2)
    const admin = new Redis(redis.url)
    let flushes = 0
    try {
      for (const fraction of [0.2, 0.5]) {
        await waitFor(() => doneCount(client, ids), (n) => n >= fraction * TASKS, 60_000, `progress before flush ${flushes + 1}`)
        await admin.call("FUNCTION", "FLUSH")
        flushes++
      }
      // The client's own calls meet a missing library too: one at a time (written at once) and pipelined.
      await admin.call("FUNCTION", "FLUSH")
      const lone = await client.enqueueTask(faultAgent, faultAgent.createTask({ id: "flush-lone", ownerId: "faults", payload: { turns: 1, done: 0, workMs: 1 } }))
      await admin.call("FUNCTION", "FLUSH")
      const many = await client.enqueueTasks(faultAgent, ["flush-many-0", "flush-many-1"].map((id) =>
        faultAgent.createTask({ id, ownerId: "faults", payload: { turns: 1, done: 0, workMs: 1 } })))
      expect(many.filter((r) => r.error !== undefined)).toEqual([])
      ids.push(lone, "flush-many-0", "flush-many-1")
    } finally {
      admin.disconnect()
    }
    await waitAllTerminal(client, ids, 60_000)
    const v = verify(await readTasks(client, ids))
    console.log(`[function-flush] ${summary(v)}; flushes=${flushes + 2}; worker warnings: ${warningKinds(workers) || "none"}`)
    expectAllCompletedOnce(v, ids.length)
    expect(warnings(workers).filter((l) => l.includes("Function not found") || l.includes("ERROR"))).toEqual([])
  }, 120_000)
})
