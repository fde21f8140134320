/**
 * Proves fencing with a real paused process: worker A is frozen with SIGSTOP in the middle of a turn
 * for longer than the heartbeat timeout; worker B's maintenance revokes A's lease (TaskRecovered), B
 * claims the task under a newer lease and completes it. When A is thawed with SIGCONT its turn finishes
 * and it sends its late completion under the old lease: the script rejects it (StaleLease) and nothing
 * changes. The task completes exactly once, with B's output, and its history folds to its status hash.
 */
import { afterAll, describe, expect, it } from "vitest"
import { randomUUID } from "node:crypto"
import {
  cleanupAll,
  deleteNamespace,
  faultAgent,
  Orchestrator,
  pidOfWorker,
  readTasks,
  sharedRedisUrl,
  sleep,
  spawnWorker,
  summary,
  verify,
  waitFor
} from "./harness.ts"

const namespace = `faults-fence-${randomUUID().slice(0, 8)}`
const client = new Orchestrator({ redisUrl: sharedRedisUrl, namespace })
const timing = { HB_INTERVAL: 0.2, HB_THRESHOLD: 2, HB_GRACE: 0.2, MAINT_INTERVAL: 0.2, LOG_TURNS: 1 }
const workMs = 1_500

afterAll(async () => {
  await cleanupAll()
  await client.stop()
  await deleteNamespace(sharedRedisUrl, namespace)
})

describe("worker paused with SIGSTOP past its lease, then SIGCONT", () => {
  it("has its late completion rejected (StaleLease); the task completes exactly once", async () => {
    const a = await spawnWorker({ label: "A", redisUrl: sharedRedisUrl, namespace, env: { ...timing, WORK_MS: workMs } })
    const id = `fence-${randomUUID().slice(0, 8)}`
    await client.enqueueTask(faultAgent, faultAgent.createTask({ id, ownerId: "faults", payload: { turns: 1, done: 0 } }))
    await waitFor(async () => a.lines.some((l) => l.includes('"turn-start"') && l.includes(id)), (x) => x, 30_000, "A's turn")
    const turnStartedAt = Date.now()
    process.kill(a.pid, "SIGSTOP")

    const b = await spawnWorker({ label: "B", redisUrl: sharedRedisUrl, namespace, env: { ...timing, WORK_MS: 10 } })
    const done = await waitFor(() => client.getTaskData(id), (d) => d?.status === "completed", 30_000, "B completes the task")
    expect(done?.output).toMatchObject({ by: "B", pid: b.pid })
    const before = await client.getTaskHistory(id)

    // A's turn timer is long overdue when it wakes: it finishes the turn and commits under its old lease.
    await sleep(Math.max(0, turnStartedAt + workMs + 200 - Date.now()))
    const stoppedFor = Date.now() - turnStartedAt
    process.kill(a.pid, "SIGCONT")
    await waitFor(async () => a.lines.some((l) => l.includes('"turn-end"') && l.includes(id)), (x) => x, 30_000, "A's late turn end")
    const rejection = (await waitFor(
      async () => a.lines.find((l) => l.includes(id) && l.includes("is stale")),
      (l) => l !== undefined,
      30_000,
      "A's late commit to be rejected"
    ))!
    // The late completion itself was sent and refused by the complete script.
    expect(rejection).toContain(`Complete of task ${id} not applied: lease 1 of task ${id} is stale (task is completed under lease 2)`)

    // Nothing A did after waking changed the task.
    await sleep(500)
    const after = await client.getTaskHistory(id)
    expect(after).toEqual(before)
    const tags = after.map((e) => e.event._tag)
    expect(tags).toEqual(["TaskEnqueued", "TaskClaimed", "TaskRecovered", "TaskClaimed", "TaskCompleted"])
    expect(pidOfWorker((after[1]!.event as { worker: string }).worker)).toBe(a.pid)
    expect(pidOfWorker((after[3]!.event as { worker: string }).worker)).toBe(b.pid)
    expect(tags.filter((t) => t === "TaskCompleted")).toHaveLength(1)

    const v = verify(await readTasks(client, [id]))
    console.log(`[fencing] ${summary(v)}; A stopped ${stoppedFor} ms; A's late commit: ${rejection.slice(0, 200)}`)
    expect(v.duplicates).toEqual([])
    expect(v.foldMismatches).toEqual([])
    expect(v.completed).toBe(1)
  }, 60_000)
})
