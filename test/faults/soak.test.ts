/**
 * A soak under chaos with real processes: SOAK_TASKS multi-turn tasks (1–3 turns, 2–10 ms of work
 * each) run through SOAK_PROCS worker processes (SOAK_WORKERS turns at a time each) while a chaos loop
 * SIGKILLs a random running worker process every ~SOAK_KILL_EVERY_MS (default 0.7 s; only while
 * another one runs) and starts a fresh one in its place. Every other process runs with `projectMetrics: false`,
 * so the projection moves among the processes that project while they are killed, and two in three store
 * checkpoints as deltas (ADR 0018), so tasks move between chains and whole payloads as they change hands.
 *
 * Proves, for every task: exactly one terminal state (none lost, none completed twice: one
 * TaskCompleted in its history), its checkpoints in order with at most one turn repeated per lost
 * lease, and its history folds (projections/TaskDecider.ts) to the state in its status hash; at the
 * end no queue entry is left behind; and the live metrics, which the killed processes' projectors committed
 * batch by batch (a kill can fall between a batch's read and its commit), equal a rebuild from the log. Prints the numbers (tasks, kills, recoveries, repeated turns,
 * duplicates=0, lost=0, durations).
 *
 * CI size by default (1,000 tasks, 3 processes); `npm run soak` runs 10,000 tasks through 4 processes.
 */
import { afterAll, describe, expect, it } from "vitest"
import { randomUUID } from "node:crypto"
import { Redis } from "ioredis"
import { partitionKeys } from "../../streams/Keys.ts"
import { Effect } from "effect"
import { MetricsProjector } from "../../projections/Projector.ts"
import { trimQueue } from "../../src/Maintenance.ts"
import {
  cleanupAll,
  deleteNamespace,
  faultAgent,
  Orchestrator,
  readTasks,
  sharedRedisUrl,
  sleep,
  spawnWorker,
  summary,
  verify,
  waitFor,
  type WorkerProcess,
  expectAllCompletedOnce
} from "./harness.ts"

const TASKS = Number(process.env.SOAK_TASKS ?? 1_000)
const PROCS = Number(process.env.SOAK_PROCS ?? 3)
const KILL_EVERY_MS = Number(process.env.SOAK_KILL_EVERY_MS ?? 700)
const WORKERS = Number(process.env.SOAK_WORKERS ?? 8)
const timing = { HB_INTERVAL: 0.2, HB_THRESHOLD: 2, HB_GRACE: 0.2, MAINT_INTERVAL: 0.2, WORKERS, BATCH: WORKERS }

const namespace = `faults-soak-${randomUUID().slice(0, 8)}`
const client = new Orchestrator({ redisUrl: sharedRedisUrl, namespace })
const keys = partitionKeys({ namespace, partitions: 1 }, 0)
const admin = new Redis(sharedRedisUrl)

afterAll(async () => {
  await cleanupAll()
  await client.stop()
  await deleteNamespace(sharedRedisUrl, namespace)
  admin.disconnect()
})

/** Tasks in the status indexes: every member but the anchor (scored -inf, streams/Keys.ts). */
const finished = async () => {
  const [[, c], [, f], [, x]] = (await admin.pipeline()
    .zcount(keys.index("completed"), "(-inf", "+inf")
    .zcount(keys.index("failed"), "(-inf", "+inf")
    .zcount(keys.index("cancelled"), "(-inf", "+inf")
    .exec()) as Array<[unknown, number]> as [[unknown, number], [unknown, number], [unknown, number]]
  return c + f + x
}

describe(`soak: ${TASKS} tasks, ${PROCS} worker processes, random SIGKILLs`, () => {
  it("every task reaches exactly one terminal state; histories fold to the status hashes", async () => {
    const t0 = Date.now()
    let serial = 0
    // Every other process leaves the metrics to the others (`projectMetrics: false`), as a deployment may.
    const envOf = (n: number) => ({ ...timing, PROJECT_METRICS: n % 2 === 0 ? 1 : 0, CHECKPOINT_DELTAS: n % 3 === 2 ? 0 : 1 })
    const spawnOne = () => spawnWorker({ label: `P${serial}`, redisUrl: sharedRedisUrl, namespace, env: envOf(serial++) })
    const procs: Array<WorkerProcess> = await Promise.all(Array.from({ length: PROCS }, spawnOne))

    const startedAt = Date.now()
    // Chaos: kill a random running worker process now and then, and start a fresh one in its place.
    // Only processes whose workers run are killed, and only while another one runs: a slow machine
    // (processes take seconds to start) slows the chaos down rather than stopping all work.
    let kills = 0
    let running = true
    let wake = () => {}
    const stopped = new Promise<void>((r) => (wake = r))
    const chaos = (async () => {
      while (running) {
        await Promise.race([sleep(KILL_EVERY_MS * (0.5 + Math.random())), stopped])
        if (!running) break
        const live = procs.filter((p) => p.alive() && p.ready())
        if (live.length < 2) continue
        const victim = live[Math.floor(Math.random() * live.length)]!
        process.kill(victim.pid, "SIGKILL")
        await victim.exited
        kills++
        procs.push(await spawnWorker({ label: `P${serial}`, redisUrl: sharedRedisUrl, namespace, env: envOf(serial++), waitReady: false }))
      }
    })()

    const ids = Array.from({ length: TASKS }, (_, i) => `soak-${i}`)
    let turnsPlanned = 0
    for (let i = 0; i < ids.length; i += 500) {
      const batch = ids.slice(i, i + 500).map((id) => {
        const turns = 1 + Math.floor(Math.random() * 3)
        turnsPlanned += turns
        return faultAgent.createTask({ id, ownerId: "soak", payload: { turns, done: 0, workMs: 2 + Math.floor(Math.random() * 9) } })
      })
      const results = await client.enqueueTasks(faultAgent, batch, { maxRetries: 100 })
      expect(results.filter((r) => r.error !== undefined)).toEqual([])
    }
    const enqueuedAt = Date.now()

    let done = 0
    const progress = setInterval(async () => {
      const counts = await admin.pipeline().zcount(keys.index("queued"), "(-inf", "+inf").zcount(keys.index("processing"), "(-inf", "+inf").zcount(keys.index("completed"), "(-inf", "+inf").xlen(keys.queue("fault")).exec()
      const [queued, processing, completed, queue] = counts?.map(([, n]) => n) ?? []
      console.log(
        `[soak] +${Date.now() - startedAt} ms: queued ${queued}, processing ${processing}, completed ${completed}, ` +
          `queue entries ${queue}, kills ${kills}`
      )
    }, 5_000)
    try {
      done = await waitFor(finished, (n) => n >= TASKS, 60_000 + TASKS * 60, "every task terminal")
    } finally {
      running = false
      clearInterval(progress)
      wake()
      await chaos
    }
    const runMs = Date.now() - startedAt

    const v = verify(await readTasks(client, ids))
    const turnsRun = v.claims
    // No queue entry left behind once everything is finished: none waiting or pending, and maintenance's trim
    // leaves at most the last delivered one (acked deliveries stay until it runs).
    await Effect.runPromise(trimQueue(admin, keys.queue("fault"), "fault"))
    const [queueLength, pending] = await Promise.all([
      admin.xlen(keys.queue("fault")),
      admin.xpending(keys.queue("fault"), "fault") as Promise<[number, ...Array<unknown>]>
    ])
    console.log(
      `[soak] ${summary(v)}; procs=${PROCS} (x${WORKERS} turns each) kills=${kills} respawns=${kills} ` +
        `turnsPlanned=${turnsPlanned} turnsRun=${turnsRun}; procs up ${startedAt - t0} ms, enqueue ${enqueuedAt - startedAt} ms, ` +
        `run (enqueue to last terminal) ${runMs} ms ` +
        `(${Math.round((turnsPlanned / runMs) * 1000)} turns/s), total ${Date.now() - t0} ms; ` +
        `queue left: ${queueLength} entries, ${pending[0]} pending`
    )
    // The metrics: folded up to the log's end by this process's projector, then compared with a fold of the log.
    const metrics = await client.runEffect(Effect.gen(function*() {
      const projector = yield* MetricsProjector
      yield* projector.catchUp()
      return yield* projector.verify
    }))
    console.log(`[soak] metrics: live buckets ${metrics.equal ? "equal" : "differ from"} the fold of the log (${metrics.differences.length} differences)`)
    expect(metrics.differences).toEqual([])
    expect(metrics.equal).toBe(true)
    expect(done).toBe(TASKS)
    expectAllCompletedOnce(v, TASKS)
    // Tasks of 2 and 3 turns end in a checkpoint and a completion that each append to the payload's log.
    expect(v.deltaCheckpoints).toBeGreaterThan(0)
    expect(queueLength).toBeLessThanOrEqual(1)
    expect(pending[0]).toBe(0)
  }, 120_000 + TASKS * 80)
})
