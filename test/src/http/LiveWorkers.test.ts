/**
 * Live workers on the dashboard's API and `/metrics`, with real worker processes (orchestrators in this
 * process) on the test Redis: a worker is live while its registration in `{ns}:consumers` holds, however
 * long XINFO CONSUMERS shows it idle (on Redis 7.0 a read that delivers nothing does not restart `idle`, so
 * a live worker of an empty queue looks idle forever); a stopped worker is not, at once; a consumer with no
 * registration (a process of an older version) is live while idle under the threshold. The per-agent
 * "no live workers" warning follows.
 *
 * The idle threshold (30 s on the dashboard) is 300 ms in the `quick` app, so nothing waits 30 s; the
 * `strict` app keeps the default, to show that a stopped worker is not live although it was seen recently.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { defineAgent, Done } from "../../../src/Agent.ts"
import { AgentWorkerConfig, ObservabilityConfig } from "../../../src/Config.ts"
import { Orchestrator } from "../../../src/Orchestrator.ts"
import { ensureGroups } from "../../../src/Worker.ts"
import { allPartitions, namespaceKeys, partitionKeys, partitionOf } from "../../../streams/Keys.ts"
import { waitFor } from "../../support/Orchestrators.ts"
import { freshKeyspace, rawClient, testRedisOptions } from "../../support/TestRedis.ts"

const QUICK_MS = 300

/** Turns of tasks with `hold` wait until the test opens the gate (or the turn is stopped). */
let openGate: () => void = () => {}
const gate = new Promise<void>((resolve) => openGate = resolve)
const echo = defineAgent<{ hold?: boolean }>({
  name: "echo",
  turn: async (ctx) => {
    if (ctx.payload.hold) {
      await Promise.race([gate, new Promise((resolve) => ctx.signal.addEventListener("abort", resolve))])
    }
    return Done(null)
  }
})

const keyspace = freshKeyspace()
// One turn at a time, heartbeats rare (a heartbeat's XCLAIM restarts the consumer's idle time).
const worker = new Orchestrator({ ...testRedisOptions, ...keyspace })
worker.registerRunner({ agent: echo, agentWorkerConfig: new AgentWorkerConfig({ workers: 1, heartbeatInterval: 10 }) })
// The dashboard, in a process that runs no worker.
const viewer = new Orchestrator({ ...testRedisOptions, ...keyspace })
// Both read the gauges on every request (the dashboard's default reads them at most once a second).
const quick = viewer.createObservabilityApp(new ObservabilityConfig({ gaugesReadEveryMs: 0 }), { liveWithinMs: QUICK_MS })
const strict = viewer.createObservabilityApp(new ObservabilityConfig({ gaugesReadEveryMs: 0 }))
const conn = rawClient()

beforeAll(async () => {
  await Promise.all([quick.ready(), strict.ready()])
  await worker.start()
})
afterAll(async () => {
  openGate()
  await Promise.all([quick.close(), strict.close()])
  await worker.stop()
  await viewer.stop()
  conn.disconnect()
})

type App = typeof quick
const json = async (app: App, path: string) => {
  const res = await app.inject({ method: "GET", url: path })
  expect(res.statusCode, path).toBe(200)
  return res.json()
}
const echoQueue = async (app: App) =>
  (await json(app, "/observability/api/overview")).queues.find((q: { agent: string }) => q.agent === "echo")
const echoWarning = async (app: App) =>
  (await json(app, "/observability/api/overview")).warnings.find((w: { agent: string }) => w.agent === "echo")
const workerRow = async (app: App, name: string) =>
  (await json(app, "/observability/api/workers")).workers.find((w: { name: string }) => w.name === name)

/** The smallest idle time (ms) of `name` over echo's groups; -1 when it is in none. */
const idleOf = async (name: string) => {
  const idle = await Promise.all(allPartitions(keyspace).map(async (p) => {
    const reply = (await conn.call("XINFO", "CONSUMERS", partitionKeys(keyspace, p).queue("echo"), "echo").catch(() => [])) as Array<Array<unknown>>
    return reply.map((flat) => ({ name: String(flat[1]), idle: Number(flat[flat.indexOf("idle") + 1]) }))
      .filter((c) => c.name === name).map((c) => c.idle)
  }))
  return idle.flat().length === 0 ? -1 : Math.min(...idle.flat())
}

const enqueue = (hold = false) => worker.enqueueTask(echo, echo.createTask({ ownerId: "u", payload: { hold } }))

describe("live workers", () => {
  let workerId = ""
  let firstTask = ""

  it("a worker idle longer than the threshold is live while registered; tasks waiting behind it raise no warning", async () => {
    const first = firstTask = await enqueue()
    await waitFor(() => worker.getTaskStatus(first), (s) => s === "completed")
    const claimed = (await worker.getTaskHistory(first)).find((e) => e.event._tag === "TaskClaimed")?.event
    workerId = claimed?._tag === "TaskClaimed" ? claimed.worker : ""
    expect(workerId).not.toBe("")

    // The queue is empty: the worker keeps reading, and its idle time grows past the threshold.
    await waitFor(() => idleOf(workerId), (idle) => idle > QUICK_MS)
    expect(await echoQueue(quick)).toMatchObject({ waiting: 0, liveWorkers: 1, noLiveWorkers: false })
    expect((await json(quick, "/observability/api/overview")).liveWorkers).toBe(1)
    const row = await workerRow(quick, workerId)
    expect(row).toMatchObject({ live: true, pending: 0 })
    expect(row.idleMs).toBeGreaterThan(QUICK_MS)

    // Its one turn slot is busy with a held task; the next ones wait. It reads nothing meanwhile.
    const held = await enqueue(true)
    await waitFor(() => worker.getTaskStatus(held), (s) => s === "processing")
    await enqueue()
    await enqueue()
    await waitFor(() => idleOf(workerId), (idle) => idle > QUICK_MS)
    const busy = await echoQueue(quick)
    expect(busy).toMatchObject({ waiting: 2, inFlight: 1, liveWorkers: 1, noLiveWorkers: false })
    expect(await echoWarning(quick)).toBeUndefined()
    const metrics = (await quick.inject({ method: "GET", url: "/metrics" })).body
    expect(metrics).toContain(`factorial_live_workers{agent="echo"} 1`)
    expect(metrics).toContain("factorial_live_workers_distinct 1")

    openGate()
    await waitFor(() => echoQueue(quick), (q) => q.waiting === 0 && q.inFlight === 0)
  })

  it("a consumer with no registration (an older process) is live while idle under the threshold", async () => {
    // An older process's worker, which never registers: it read (or claimed) in echo's group just now.
    const queue = partitionKeys(keyspace, partitionOf(keyspace, firstTask)).queue("echo")
    await ensureGroups(conn, [queue], "echo")
    await conn.call("XGROUP", "CREATECONSUMER", queue, "echo", "older-process")
    expect(await workerRow(strict, "older-process")).toMatchObject({ live: true })
    await waitFor(() => idleOf("older-process"), (idle) => idle > QUICK_MS)
    expect(await workerRow(quick, "older-process")).toMatchObject({ live: false })
    // The registered worker, as idle, is still live.
    expect(await workerRow(quick, workerId)).toMatchObject({ live: true })
    await conn.call("XGROUP", "DELCONSUMER", queue, "echo", "older-process")
  })

  it("a worker whose registration lapsed (as after a crash) is not live", async () => {
    const registry = namespaceKeys(keyspace).consumers
    const until = await conn.zscore(registry, workerId)
    expect(Number(until)).toBeGreaterThan(Date.now())
    // As if the process had stopped renewing it long ago (its maintenance renews only every 50 s).
    await conn.zadd(registry, Date.now() - 1, workerId)
    expect(await workerRow(strict, workerId)).toMatchObject({ live: false })
    expect(await echoQueue(strict)).toMatchObject({ liveWorkers: 0 })
    await conn.zadd(registry, Number(until), workerId)
    expect(await workerRow(strict, workerId)).toMatchObject({ live: true })
  })

  it("a stopped worker is not live at once, and waiting tasks raise the warning", async () => {
    // It delivered a moment ago, so by the idle rule alone it would still count for up to 30 s.
    expect(await idleOf(workerId)).toBeLessThan(30_000)
    await worker.stop()
    expect(await workerRow(strict, workerId)).toMatchObject({ live: false })
    expect((await json(strict, "/observability/api/overview")).liveWorkers).toBe(0)
    await viewer.enqueueTask(echo, echo.createTask({ ownerId: "u", payload: {} }))
    expect(await echoQueue(strict)).toMatchObject({ waiting: 1, liveWorkers: 0, noLiveWorkers: true })
    expect((await echoWarning(strict))?.message).toBe("1 task(s) of echo are waiting and no worker of echo is live")
    const metrics = (await strict.inject({ method: "GET", url: "/metrics" })).body
    expect(metrics).toContain(`factorial_live_workers{agent="echo"} 0`)
  })
})
