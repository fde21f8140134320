/**
 * `projectMetrics: false`: a worker process that runs turns but never projects the metrics (it takes no
 * projector lease and is not counted in `{ns}:projectors`), and the projection gauges that say so on the
 * dashboard's API and `/metrics`; a process that projects (the default) then folds what the other left.
 * Stalled: the timeline misses an entry older than a minute.
 */
import { afterAll, afterEach, expect, it } from "vitest"
import { defineAgent, Done } from "../../src/Agent.ts"
import { AgentWorkerConfig, ObservabilityConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { allPartitions, namespaceKeys, partitionKeys } from "../../streams/Keys.ts"
import { waitFor } from "../support/Orchestrators.ts"
import { freshKeyspace, rawClient, testRedisOptions } from "../support/TestRedis.ts"

const work = defineAgent<{ readonly n: number }>({ name: "work", turn: (ctx) => Promise.resolve(Done(ctx.payload.n)) })
const idle = defineAgent<null>({ name: "idle", turn: () => Promise.resolve(Done(null)) })

const open: Array<Orchestrator> = []
const conn = rawClient()
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.stop()))
})
afterAll(() => conn.disconnect())

const orchestrator = (ks: { namespace: string; partitions: number }, projectMetrics?: boolean) => {
  const o = new Orchestrator({ ...testRedisOptions, ...ks, ...(projectMetrics === undefined ? {} : { projectMetrics }) })
  open.push(o)
  return o
}

const overview = async (o: Orchestrator) => {
  const app = o.createObservabilityApp(new ObservabilityConfig())
  try {
    const res = await app.inject({ method: "GET", url: "/observability/api/overview?window=1h" })
    expect(res.statusCode).toBe(200)
    const prometheus = (await app.inject({ method: "GET", url: "/metrics" })).body
    return { ...res.json(), prometheus }
  } finally {
    await app.close()
  }
}

it("a worker with projectMetrics off runs tasks but never projects; a process that projects folds them", async () => {
  const ks = freshKeyspace()
  const worker = orchestrator(ks, false)
  worker.registerRunner({ agent: work, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
  await worker.start()
  const ids = await Promise.all([1, 2, 3].map((n) => worker.enqueueTask(work, work.createTask({ ownerId: "o", payload: { n } }))))
  await waitFor(() => Promise.all(ids.map((id) => worker.getTaskStatus(id))), (s) => s.every((x) => x === "completed"))

  // Nobody projects: no lease, nobody counted, the entries wait, the timeline counts nothing.
  const leases = await Promise.all(allPartitions(ks).map((p) => conn.get(partitionKeys(ks, p).projectorLease)))
  expect(leases.every((l) => l === null)).toBe(true)
  expect(await conn.zcard(namespaceKeys(ks).projectors)).toBe(0)
  const before = await overview(worker)
  expect(before.metricsProjection.liveProjectors).toBe(0)
  expect(before.metricsProjection.oldestUnprojectedAgeMs).toBeGreaterThanOrEqual(0)
  expect(before.metricsProjection.stalled).toBe(false) // a minute has not passed
  expect(before.totals.counters.completed).toBe(0)
  expect(before.prometheus).toContain("\nfactorial_metrics_projectors 0\n")
  expect(before.prometheus).not.toContain("\nfactorial_metrics_unprojected_age_seconds 0\n")

  // Another process, projecting as every orchestrator does by default, folds them.
  const projecting = orchestrator(ks)
  projecting.registerRunner({ agent: idle })
  await projecting.start()
  const after = await waitFor(() => overview(worker), (o) => o.totals.counters.completed === 3 && o.metricsProjection.oldestUnprojectedAgeMs === null)
  expect(after.metricsProjection).toEqual({ liveProjectors: 1, oldestUnprojectedAgeMs: null, stalled: false })
  expect(after.totals.counters.enqueued).toBe(3)
  expect(after.prometheus).toContain("\nfactorial_metrics_projectors 1\n")
  expect(after.prometheus).toContain("\nfactorial_metrics_unprojected_age_seconds 0\n")
})

it("the projection is stalled once the timeline misses an entry older than a minute", async () => {
  const ks = freshKeyspace()
  const viewer = orchestrator(ks)
  // An entry two minutes old that nobody folded (its id dates it; the gauge reads no more of it).
  await conn.xadd(partitionKeys(ks, 0).events, `${Date.now() - 120_000}-0`, "e", "{}")
  const o = await overview(viewer)
  expect(o.metricsProjection.liveProjectors).toBe(0)
  expect(o.metricsProjection.oldestUnprojectedAgeMs).toBeGreaterThanOrEqual(120_000)
  expect(o.metricsProjection.stalled).toBe(true)
  expect(o.prometheus).toMatch(/\nfactorial_metrics_unprojected_age_seconds 1[2-9]\d(\.\d+)?\n/)
})
