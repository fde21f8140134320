/**
 * Proves fencing with real paused processes. Worker A is frozen (SIGSTOP) for longer than the
 * heartbeat timeout, and worker B's maintenance revokes A's lease (TaskRecovered). B claims the task
 * under a newer lease and completes it. Then A is thawed (SIGCONT).
 *
 * 1. A pauses right before it commits: its turn's work is done when it stops (it sends itself SIGSTOP
 *    at that point, so the moment is exact). When it is thawed, its completion goes out under the old
 *    lease. The complete script rejects it (StaleLease) and nothing changes.
 * 2. A is stopped from outside at an arbitrary point in its turn. When it wakes, either its heartbeat or
 *    its late completion reaches Redis first; whichever it is, it is rejected as stale, and nothing A
 *    does changes the task.
 *
 * In both cases the task completes exactly once, with B's output, and its history folds to its status
 * hash.
 */
import { afterAll, describe, expect, it } from "vitest"
import { randomUUID } from "node:crypto"
import { readFileSync } from "node:fs"
import {
  cleanupAll,
  deleteNamespace,
  faultAgent,
  killWorker,
  Orchestrator,
  pidOfWorker,
  readTasks,
  sharedRedisUrl,
  sleep,
  spawnWorker,
  summary,
  verify,
  waitFor,
  type WorkerProcess
} from "./harness.ts"

const namespace = `faults-fence-${randomUUID().slice(0, 8)}`
const client = new Orchestrator({ redisUrl: sharedRedisUrl, namespace })
const timing = { HB_INTERVAL: 0.2, HB_THRESHOLD: 2, HB_GRACE: 0.2, MAINT_INTERVAL: 0.2, LOG_TURNS: 1 }

afterAll(async () => {
  await cleanupAll()
  await client.stop()
  await deleteNamespace(sharedRedisUrl, namespace)
})

/** Linux process state: "T" when stopped. */
const isStopped = (pid: number) => readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").startsWith("T")

const staleLine = (w: WorkerProcess, id: string) => w.lines.find((l) => l.includes(id) && l.includes("is stale"))

/** B recovers the task from the frozen A and completes it; returns the history at that point. */
const takeOver = async (id: string) => {
  const b = await spawnWorker({ label: "B", redisUrl: sharedRedisUrl, namespace, env: { ...timing, WORK_MS: 10 } })
  const done = await waitFor(() => client.getTaskData(id), (d) => d?.status === "completed", 30_000, "B completes the task")
  expect(done?.output).toMatchObject({ by: "B", pid: b.pid })
  return { b, before: await client.getTaskHistory(id) }
}

/** What must hold once A is awake again: A changed nothing, the task completed once, by B. */
const checkUnchanged = async (id: string, a: WorkerProcess, b: WorkerProcess, before: unknown) => {
  await sleep(500)
  const after = await client.getTaskHistory(id)
  expect(after).toEqual(before)
  const tags = after.map((e) => e.event._tag)
  // Normally exactly [TaskEnqueued, TaskClaimed(A), TaskRecovered, TaskClaimed(B), TaskCompleted]; on a
  // starved machine A may have lost and re-claimed the task before it froze: the last four are the same.
  expect(tags.slice(-4)).toEqual(["TaskClaimed", "TaskRecovered", "TaskClaimed", "TaskCompleted"])
  expect(tags.filter((t) => t === "TaskCompleted")).toHaveLength(1)
  expect(pidOfWorker((after.at(-4)!.event as { worker: string }).worker)).toBe(a.pid)
  expect(pidOfWorker((after.at(-2)!.event as { worker: string }).worker)).toBe(b.pid)
  const v = verify(await readTasks(client, [id]))
  expect(v.duplicates).toEqual([])
  expect(v.foldMismatches).toEqual([])
  expect(v.completed).toBe(1)
  return v
}

describe("worker paused with SIGSTOP past its lease, then SIGCONT", () => {
  it("paused right before its commit: the late completion is rejected (StaleLease); the task completes once", async () => {
    // A heartbeats through its 1 s of work, then freezes with its result in hand. On a starved machine A
    // may have lost its lease to an event-loop stall before freezing; then the premise does not hold
    // and the round is repeated with a fresh process and task.
    let a: WorkerProcess | undefined
    let id = ""
    let stoppedAt = 0
    for (let round = 1; a === undefined; round++) {
      const candidate = await spawnWorker({
        label: "A",
        redisUrl: sharedRedisUrl,
        namespace,
        env: { ...timing, WORK_MS: 1_000, STOP_AT_TURN_END: 1 }
      })
      id = `fence-${randomUUID().slice(0, 8)}`
      await client.enqueueTask(faultAgent, faultAgent.createTask({ id, ownerId: "faults", payload: { turns: 1, done: 0 } }))
      await waitFor(async () => candidate.lines.some((l) => l.includes('"turn-start"') && l.includes(id)) && isStopped(candidate.pid), (x) => x, 30_000, "A frozen at the end of its turn")
      stoppedAt = Date.now()
      const state = await client.getTaskData(id)
      if (state?.status === "processing" && pidOfWorker(state.worker) === candidate.pid) {
        a = candidate
      } else {
        console.log(`[fencing] round ${round}: A lost its lease before freezing (${state?.status}); repeating`)
        await killWorker(candidate)
        expect(round).toBeLessThan(5)
        await client.cancelTask(id).catch(() => undefined)
      }
    }
    const { b, before } = await takeOver(id)
    const stoppedFor = Date.now() - stoppedAt
    process.kill(a.pid, "SIGCONT")
    const rejection = (await waitFor(
      async () => a.lines.find((l) => l.includes(`Complete of task ${id} not applied`)),
      (l) => l !== undefined,
      30_000,
      "A's late completion rejected"
    ))!
    const lease = (await client.getTaskData(id))!.attempts - 1
    expect(rejection).toContain(
      `Complete of task ${id} not applied: lease ${lease} of task ${id} is stale (task is completed under lease ${lease + 1})`
    )
    expect(a.lines.some((l) => l.includes('"turn-end"') && l.includes(id))).toBe(true)

    const v = await checkUnchanged(id, a, b, before)
    console.log(`[fencing] pause before commit: ${summary(v)}; A stopped ${stoppedFor} ms; A's late commit: ${rejection.slice(0, 200)}`)
    await killWorker(a)
    await killWorker(b)
  }, 60_000)

  it("stopped at an arbitrary point of its turn: nothing it does after waking changes the task", async () => {
    const workMs = 1_500
    const a = await spawnWorker({ label: "A", redisUrl: sharedRedisUrl, namespace, env: { ...timing, WORK_MS: workMs } })
    const id = `fence-${randomUUID().slice(0, 8)}`
    await client.enqueueTask(faultAgent, faultAgent.createTask({ id, ownerId: "faults", payload: { turns: 1, done: 0 } }))
    await waitFor(async () => a.lines.some((l) => l.includes('"turn-start"') && l.includes(id)), (x) => x, 30_000, "A's turn")
    const turnSeenAt = Date.now()
    process.kill(a.pid, "SIGSTOP")

    const { b, before } = await takeOver(id)
    // When A wakes its turn timer is overdue as well as its heartbeat: whichever lands first is stale.
    await sleep(Math.max(0, turnSeenAt + workMs + 200 - Date.now()))
    const stoppedFor = Date.now() - turnSeenAt
    process.kill(a.pid, "SIGCONT")
    const rejection = (await waitFor(async () => staleLine(a, id), (l) => l !== undefined, 30_000, "A's late action rejected"))!
    expect(rejection).toMatch(/lease \d+ of task \S+ is stale/)
    const path = rejection.includes("Complete of task") ? "late completion rejected" : "heartbeat rejected, turn interrupted"

    const v = await checkUnchanged(id, a, b, before)
    console.log(`[fencing] arbitrary pause: ${summary(v)}; A stopped ${stoppedFor} ms; ${path}: ${rejection.slice(0, 200)}`)
    await killWorker(a)
    await killWorker(b)
  }, 60_000)
})
