/**
 * Proves that on a Redis Cluster (3 masters, 6 partitions) several worker processes lose nothing when one
 * master's client connections are killed mid-run, again and again: the workers reconnect by themselves,
 * every task ends with exactly one terminal event, and every history folds to its status hash.
 * The cluster is private to this test (scripts/redis-cluster.sh on its own ports).
 */
import { execFileSync } from "node:child_process"
import { resolve } from "node:path"
import { Redis } from "ioredis"
import { afterAll, expect, it } from "vitest"
import { cleanupAll, expectAllCompletedOnce, faultAgent, Orchestrator, readTasks, spawnWorker, statuses, summary, verify, waitAllTerminal, waitFor } from "./harness.ts"

const script = resolve(import.meta.dirname, "../../scripts/redis-cluster.sh")
const base = Number(process.env.FAULT_CLUSTER_PORT ?? 7201)
const TASKS = Number(process.env.CLUSTER_OUTAGE_TASKS ?? 300)
const PARTITIONS = 6
const timing = { HB_INTERVAL: 0.2, HB_THRESHOLD: 2, HB_GRACE: 0.2, MAINT_INTERVAL: 0.2, WORKERS: 8, BATCH: 8, PARTITIONS }

let client: Orchestrator | undefined
afterAll(async () => {
  await client?.stop()
  await cleanupAll()
  execFileSync("bash", [script, "stop", String(base)], { stdio: "ignore" })
})

it("kills one master's client connections mid-run: no task lost or finished twice", async () => {
  const seeds = execFileSync("bash", [script, "start", String(base)], { encoding: "utf8" }).trim()
  const clusterNodes = seeds.split(",").map((s) => ({ host: "127.0.0.1", port: Number(s.split(":")[1]) }))
  const namespace = `cluster-outage-${process.pid}`
  client = new Orchestrator({ clusterNodes, namespace, partitions: PARTITIONS })
  const ids = Array.from({ length: TASKS }, (_, i) => `co-${i}`)
  const results = await client.enqueueTasks(
    faultAgent,
    ids.map((id, i) => faultAgent.createTask({ id, ownerId: "faults", payload: { turns: 1 + (i % 3), done: 0, workMs: 5 } })),
    { maxRetries: 100 }
  )
  expect(results.filter((r) => r.error !== undefined)).toEqual([])
  const workers = await Promise.all(
    [0, 1, 2].map((i) =>
      spawnWorker({ label: `C${i}`, redisUrl: "", namespace, env: { ...timing, CLUSTER_NODES: seeds } })
    )
  )
  const victim = new Redis({ host: "127.0.0.1", port: clusterNodes[1]!.port })
  let killed = 0
  try {
    for (let round = 0; round < 4; round++) {
      await waitFor(
        async () => (await statuses(client!, ids)).filter((s) => s === "completed").length,
        (n) => n >= ((round + 1) * TASKS) / 6,
        60_000,
        `progress before kill ${round + 1}`
      )
      killed += Number(await victim.call("CLIENT", "KILL", "TYPE", "normal"))
      killed += Number(await victim.call("CLIENT", "KILL", "TYPE", "pubsub"))
    }
  } finally {
    victim.disconnect()
  }
  await waitAllTerminal(client, ids, 90_000)
  const v = verify(await readTasks(client, ids))
  console.log(`[cluster-outage] ${summary(v)}; ${killed} connections of one master killed in 4 rounds`)
  expect(killed).toBeGreaterThan(0)
  expectAllCompletedOnce(v, ids.length)
  expect(workers.every((w) => w.alive())).toBe(true)
}, 180_000)
