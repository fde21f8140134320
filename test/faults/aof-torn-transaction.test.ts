/**
 * A kill that tears the append-only file in the middle of a transition's transaction must not bring half of it
 * back at a later restart. Redis 7.0 leaves the file ending in an open MULTI after such a restart, and the next
 * restart replays the torn transaction's first commands with the following EXEC: the task's history gets the
 * event (here a TaskCompleted) whose status change never happened, next to the one that really ended it.
 * Maintenance rewrites the AOF once after a restart (src/AofRewrite.ts), which removes the open MULTI.
 *
 * Deterministic: the tear is made by cutting the file, as a kill during Redis' write would leave it. The window
 * in which a second crash could still replay a torn transaction lasts until that rewrite: maintenance asks for it as
 * soon as the connection is ready again, not at its next pass.
 */
import { afterAll, expect, it } from "vitest"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Redis } from "ioredis"
import { rewriteAofAfterRestart } from "../../src/AofRewrite.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import type { TaskCommand } from "../../projections/TaskDecider.ts"
import { MaintenanceWorkerConfig } from "../../src/Config.ts"
import { cleanupAll, expectAllCompletedOnce, faultAgent, Orchestrator, readTasks, startPrivateRedis, verify, waitFor } from "./harness.ts"

const clients: Array<Orchestrator> = []
afterAll(async () => {
  await Promise.all(clients.map((c) => c.stop()))
  await cleanupAll()
})

/** Cuts the newest incremental AOF a few bytes into the last HSET of its last transaction. */
const tearLastTransaction = (dir: string) => {
  const aofDir = join(dir, "appendonlydir")
  const incr = readdirSync(aofDir).filter((f) => f.endsWith(".incr.aof")).sort((a, b) => Number(a.split(".")[2]) - Number(b.split(".")[2])).at(-1)!
  const path = join(aofDir, incr)
  const bytes = readFileSync(path)
  const multi = bytes.lastIndexOf("MULTI\r\n")
  const hset = bytes.indexOf("$4\r\nHSET\r\n", multi)
  expect(multi > 0 && hset > multi).toBe(true)
  writeFileSync(path, bytes.subarray(0, hset + 12))
}

it("a transaction torn by a kill is not half replayed at the next restart (the AOF is rewritten after a restart)", async () => {
  const redis = await startPrivateRedis({ aof: true })
  const client = new Orchestrator({ redisUrl: redis.url, namespace: "faults-torn" })
  clients.push(client)
  const run = (command: TaskCommand) => client.runEffect(TaskStore.use((s) => s.execute(command)))
  const admin = () => new Redis(redis.url)
  const taskId = "torn-1"
  await run({ _tag: "Enqueue", taskId, agent: "torn", ownerId: "o", payload: null, maxRetries: 3, now: 1_000 })
  await run({ _tag: "Claim", taskId, lease: 0, worker: "w1", now: 2_000 })
  await run({ _tag: "Complete", taskId, lease: 1, output: "first", steeringApplied: 0, now: 3_000 })

  // Killed while writing that completion to the AOF: the restart leaves it out.
  await redis.kill()
  tearLastTransaction(redis.dir!)
  await redis.restart()
  const [afterTear] = await readTasks(client, [taskId])
  expect(afterTear!.state?.status).toBe("processing")
  expect(afterTear!.history.map((e) => e.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed"])

  // What a maintenance pass does after a restart; then the lease is recovered and the task completed again.
  const conn = admin()
  try {
    expect(await client.runEffect(TaskStore.use((s) => rewriteAofAfterRestart(s.conn)))).toBe(1)
    await waitFor(() => conn.info("persistence"), (i) => /aof_rewrites:1/.test(i) && /aof_rewrite_in_progress:0/.test(i), 10_000, "the AOF rewrite")
  } finally {
    conn.disconnect()
  }
  await run({ _tag: "Recover", taskId, lease: 1, now: 60_000 })
  await run({ _tag: "Claim", taskId, lease: 1, worker: "w2", now: 61_000 })
  await run({ _tag: "Complete", taskId, lease: 2, output: "second", steeringApplied: 0, now: 62_000 })

  // Killed and restarted again: one completion, the real one.
  await redis.kill()
  await redis.restart()
  const reports = await readTasks(client, [taskId])
  expect(reports[0]!.history.map((e) => e.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed", "TaskRecovered", "TaskClaimed", "TaskCompleted"])
  expectAllCompletedOnce(verify(reports), 1)
})

it("maintenance asks for that rewrite as soon as the restarted server is back, not a pass interval later", async () => {
  const redis = await startPrivateRedis({ aof: true })
  const orchestrator = new Orchestrator({ redisUrl: redis.url, namespace: "faults-aof-ready" })
  clients.push(orchestrator)
  orchestrator.registerRunner({ agent: faultAgent, maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: 120 }) })
  await orchestrator.start()
  const rewritten = async (what: string) => {
    const conn = new Redis(redis.url)
    try {
      await waitFor(() => conn.info("persistence"), (i) => /aof_rewrites:1/.test(i) && /aof_rewrite_in_progress:0/.test(i), 10_000, what)
    } finally {
      conn.disconnect()
    }
  }
  await rewritten("the rewrite of the first pass")
  // Killed and restarted: the server has not rewritten since it started; the next pass is 120 s away.
  await redis.kill()
  await redis.restart()
  await rewritten("the rewrite after the restart")
})
