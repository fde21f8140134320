/**
 * `npm run bench:hot-path`: what the task transitions cost Redis itself, without the worker, the agent or a
 * second system around them. On a private Redis it enqueues N tasks (pipelines of 200, as `enqueueTasks`),
 * then drains them with S slots the way a worker's slots do (each `Complete` fused with the next claim,
 * `TaskStore.claimNext`), and prints per task and phase: function calls, their server time (INFO
 * commandstats), the server's CPU time and the commands run inside the functions.
 *
 *   node bench/hot-path.ts [--tasks=N] [--slots=S] [--redis-server=<path>] [--callgrind] [--side=bullmq]
 *                          [--payload-bytes=B] [--cpu-prof=<phase>] [--perf=<phase>] [--projectors=P]
 *
 * `--payload-bytes=B` pads each task's payload to about B bytes of JSON (default: the bench's ~100), for
 * both systems: LLM agents carry conversations of many KB.
 *
 * With `--callgrind` the server runs under `valgrind --tool=callgrind` and each phase also reports the
 * instructions it executed per task: unlike times, a count that repeats exactly for the same binary and
 * inputs whatever else the machine does, so a change to the Lua shows its effect in one run. For a profile
 * by function (`callgrind_annotate`), build Redis from source with symbols and pass it as `--redis-server`;
 * the dumps are left in bench/results/callgrind/. Keep N small under valgrind (2,000–5,000): it runs the
 * server about 50× slower.
 *
 * Our side then runs a third phase: the metrics projector's follow loop (`MetricsProjector.run`) folding the
 * three events each task left in the partition log (enqueued, claimed, completed), as every orchestrator
 * process does in the background, until its checkpoint reaches the log's end; its costs are reported per task
 * too (BullMQ keeps no such projection). `--projectors=P` runs P of them at once, each on its own
 * connections under its own consumer name, as P worker processes would (ADR 0015: one leads, the rest stand by).
 *
 * `--cpu-prof=<phase>` writes a V8 CPU profile of the client during the phase whose name starts with it
 * (`enqueue`, `drain`, `metrics`) to bench/results/prof/, for `bench/profile-summary.ts`: unlike
 * `node --cpu-prof`, it leaves out start-up and the other phases.
 *
 * `--perf=<phase>` samples the server during that phase with Linux `perf` (`perf record -e cpu-clock -g`: a
 * software clock, so it works in VMs without hardware counters; needs the `linux-perf` package) and prints
 * where its time went by object (the server, libc, jemalloc, the kernel): how much of Redis' time is system
 * calls rather than instructions. The recording is left in bench/results/perf/ for `perf report -i`.
 *
 * `--side=bullmq` counts BullMQ instead, the same way: `addBulk` of 200 jobs per call, then a `Worker` with
 * `concurrency` S and a no-op processor draining them (its background commands included: it is what BullMQ
 * costs Redis per job), so the two systems' instructions per job compare exactly.
 */
import { Queue, Worker } from "bullmq"
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { Session } from "node:inspector/promises"
import { Effect, Layer, ManagedRuntime } from "effect"
import type { TaskCommand } from "../projections/TaskDecider.ts"
import { metricsOptionsFromTimeline } from "../projections/MetricsBuckets.ts"
import { MetricsProjector } from "../projections/Projector.ts"
import { MetricsTimelineConfig } from "../src/Config.ts"
import { type ClaimedEntry, TaskStore } from "../src/TaskStore.ts"
import { partitionKeys } from "../streams/Keys.ts"
import { RedisClient } from "../streams/RedisClient.ts"
import { readStats, resetStats, type CommandStats } from "./commandstats.ts"
import { makePayload, setPayloadBytes } from "./payload.ts"
import { redisCpuSeconds, startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const tasks = Number(arg("tasks") ?? 20000)
const slots = Number(arg("slots") ?? 100)
const callgrind = process.argv.includes("--callgrind")
const side = arg("side") ?? "ours"
const projectors = Number(arg("projectors") ?? 1)
const profiledPhase = arg("cpu-prof")
const perfPhase = arg("perf")
if (arg("payload-bytes") !== undefined) setPayloadBytes(Number(arg("payload-bytes")))
if (side !== "ours" && side !== "bullmq") throw new Error("--side must be ours or bullmq")
if (![tasks, slots, projectors].every((n) => Number.isInteger(n) && n >= 1)) {
  throw new Error("--tasks, --slots and --projectors must be positive integers")
}

const dumps = new URL("./results/callgrind/", import.meta.url).pathname
if (callgrind) mkdirSync(dumps, { recursive: true })
const redis = await startRedis({
  ...(arg("redis-server") !== undefined ? { binary: arg("redis-server")! } : {}),
  ...(callgrind
    ? { wrap: ["valgrind", "--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${dumps}redis.%p.out`] }
    : {})
})
const control = (...args: ReadonlyArray<string>) => execFileSync("callgrind_control", [...args, String(redis.pid)], { stdio: "ignore" })
/** Instructions counted so far in this run's dumps (each `-d` writes the counts since the previous one). */
const dumpedInstructions = (): number =>
  readdirSync(dumps).filter((f) => f.startsWith(`redis.${redis.pid}.out`)).reduce((sum, f) => {
    const totals = /^totals: (\d+)/m.exec(readFileSync(`${dumps}${f}`, "utf8"))
    return sum + Number(totals?.[1] ?? 0)
  }, 0)

interface Phase {
  readonly name: string
  readonly tasks: number
  readonly stats: CommandStats
  readonly cpuUs: number
  /** This process's CPU time (the client's: user + system). */
  readonly clientCpuUs: number
  readonly seconds: number
  readonly instructions?: number
}

/** Samples the server with `perf` until `stop`, which prints the share of its time per object (DSO). */
const startPerf = async (phase: string) => {
  const dir = new URL("./results/perf/", import.meta.url).pathname
  mkdirSync(dir, { recursive: true })
  const file = `${dir}redis-${phase.split(" ")[0]}-${redis.pid}.data`
  const recorder = spawn("perf", ["record", "-q", "-e", "cpu-clock", "-F", "4999", "-g", "-p", String(redis.pid), "-o", file], { stdio: "ignore" })
  const failed = new Promise<never>((_, reject) => recorder.once("error", (e) => reject(new Error(`--perf needs Linux perf (linux-perf): ${e.message}`))))
  await Promise.race([new Promise((r) => setTimeout(r, 500)), failed]) // perf attaches before the phase starts
  return {
    stop: async () => {
      const exited = new Promise((r) => recorder.once("exit", r))
      recorder.kill("SIGINT")
      await exited
      const report = execFileSync("perf", ["report", "-i", file, "--stdio", "--no-children", "--sort", "dso", "-g", "none"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      const shares = report.split("\n").filter((l) => /^\s+[\d.]+%/.test(l)).slice(0, 6).map((l) => l.trim().replace(/\s+/, " "))
      console.log(`perf samples of the server during "${phase}" (${file}): ${shares.join(", ")}`)
    }
  }
}

/** Runs `body` as a measured phase: command statistics, server CPU and (under callgrind) instructions. */
const measure = async (name: string, n: number, body: () => Promise<void>): Promise<Phase> => {
  await resetStats(redis.admin)
  const before = await redisCpuSeconds(redis.admin)
  const dumped = callgrind ? dumpedInstructions() : 0
  if (callgrind) control("-z"), control("-i", "on")
  const perf = perfPhase !== undefined && name.startsWith(perfPhase) ? await startPerf(name) : undefined
  const profiler = profiledPhase !== undefined && name.startsWith(profiledPhase) ? new Session() : undefined
  if (profiler !== undefined) profiler.connect(), await profiler.post("Profiler.enable"), await profiler.post("Profiler.start")
  const started = performance.now()
  const clientBefore = process.cpuUsage()
  await body()
  const clientCpu = process.cpuUsage(clientBefore)
  if (profiler !== undefined) {
    const { profile } = await profiler.post("Profiler.stop")
    const dir = new URL("./results/prof/", import.meta.url).pathname
    mkdirSync(dir, { recursive: true })
    const file = `${dir}hot-path-${profiledPhase}-${process.pid}.cpuprofile`
    writeFileSync(file, JSON.stringify(profile))
    profiler.disconnect()
    console.log(`CPU profile of "${name}": ${file}`)
  }
  const seconds = (performance.now() - started) / 1000
  if (perf !== undefined) await perf.stop()
  if (callgrind) control("-i", "off"), control("-d")
  const stats = await readStats(redis.admin)
  const cpuUs = ((await redisCpuSeconds(redis.admin)) - before) * 1e6
  return { name, tasks: n, stats, cpuUs, clientCpuUs: clientCpu.user + clientCpu.system, seconds, ...(callgrind ? { instructions: dumpedInstructions() - dumped } : {}) }
}

/** Our side: enqueues through `TaskStore.executeMany`, then drains with slots that fuse each Complete with the next claim. */
const runOurs = async (): Promise<ReadonlyArray<Phase>> => {
  const keyspace = { namespace: "hot-path", partitions: 1 }
  const runtime = ManagedRuntime.make(TaskStore.layer(keyspace).pipe(Layer.provide(RedisClient.layer({ url: redis.url }))))
  const store = await runtime.runPromise(Effect.gen(function*() {
    return yield* TaskStore
  }))
  const agent = "noop"
  const keys = partitionKeys(keyspace, 0)
  await store.conn.xgroup("CREATE", keys.queue(agent), agent, "0", "MKSTREAM")

  const ids = Array.from({ length: tasks }, (_, i) => `hp-${i}`)
  const enqueued = await measure("enqueue (pipelines of 200)", tasks, async () => {
    for (let i = 0; i < tasks; i += 200) {
      const commands = ids.slice(i, i + 200).map((taskId, j): { command: TaskCommand } => ({
        command: { _tag: "Enqueue", taskId, agent, ownerId: "bench", payload: makePayload(i + j), maxRetries: 3, now: Date.now() }
      }))
      await runtime.runPromise(store.executeMany(commands))
    }
  })

  const worker = "hot-path-worker"
  const request = (count: number) => ({ agent, partition: 0, worker, count, now: Date.now() })
  let completed = 0
  /** Completes a claimed task and claims the slot's next one in the same call; returns it, if any. */
  const completeAndClaim = async ({ entryId, taskId, lease }: ClaimedEntry): Promise<ClaimedEntry | undefined> => {
    const command: TaskCommand = {
      _tag: "Complete", taskId, lease: lease + 1, output: { done: true }, steeringApplied: 0, now: Date.now()
    }
    const r = await runtime.runPromise(store.claimNext(request(1), { command, delivery: { entryId, agent } }))
    if (r.outcome === undefined || !("values" in r.outcome)) throw new Error(`Complete of ${taskId}: ${JSON.stringify(r.outcome)}`)
    completed++
    return r.claims.find((c) => "values" in c.outcome)
  }
  const drained = await measure(`drain (${slots} slots: Complete fused with the next claim)`, tasks, async () => {
    const first = await runtime.runPromise(store.claimNext(request(slots)))
    await Promise.all(first.claims.map(async (claimed) => {
      for (let next: ClaimedEntry | undefined = claimed; next !== undefined;) next = await completeAndClaim(next)
    }))
  })
  if (completed !== tasks) throw new Error(`drained ${completed} of ${tasks} tasks`)

  const lastId = (await store.conn.xrevrange(keys.events, "+", "-", "COUNT", 1))[0]![0]
  const followers = Array.from({ length: projectors }, (_, i) =>
    ManagedRuntime.make(
      MetricsProjector.layer(keyspace, { ...metricsOptionsFromTimeline(new MetricsTimelineConfig()), consumer: `hot-path-${i}` }).pipe(
        Layer.provide(RedisClient.layer({ url: redis.url }))
      )
    ))
  const { checkpointField } = await followers[0]!.runPromise(Effect.gen(function*() {
    return yield* MetricsProjector
  }))
  const projected = await measure(`metrics projection (${projectors} follow loop${projectors === 1 ? "" : "s"}: 3 log events per task)`, tasks, async () => {
    for (const follower of followers) {
      follower.runFork(Effect.gen(function*() {
        const projector = yield* MetricsProjector
        return yield* Effect.scoped(projector.run)
      }))
    }
    // Polled every 20 ms: its HGETs show in the phase's commands, about one per 100 tasks at most.
    while ((await store.conn.hget(keys.checkpoints, checkpointField)) !== lastId) await new Promise((resolve) => setTimeout(resolve, 20))
  })
  await Promise.all(followers.map((f) => f.dispose()))
  await runtime.dispose()
  return [enqueued, drained, projected]
}

/** BullMQ's side: `addBulk` of 200 jobs per call, then a Worker with `slots` concurrency and a no-op processor. */
const runBullmq = async (): Promise<ReadonlyArray<Phase>> => {
  const connection = { host: "127.0.0.1", port: redis.port }
  const queue = new Queue("hot-path", { connection })
  await queue.waitUntilReady()
  const enqueued = await measure("enqueue (addBulk of 200)", tasks, async () => {
    for (let i = 0; i < tasks; i += 200) {
      await queue.addBulk(Array.from({ length: Math.min(200, tasks - i) }, (_, j) => ({ name: "noop", data: makePayload(i + j) })))
    }
  })
  let done = 0
  let worker: Worker | undefined
  const drained = await measure(`drain (${slots} slots: a Worker with concurrency ${slots}, no-op processor)`, tasks, () =>
    new Promise<void>((resolve, reject) => {
      worker = new Worker("hot-path", async () => ({ done: true }), { connection, concurrency: slots })
      worker.on("completed", () => {
        if (++done === tasks) resolve()
      })
      worker.on("failed", (_job, e) => reject(e))
    }))
  await worker?.close()
  await queue.close()
  return [enqueued, drained]
}

const phases = side === "ours" ? await runOurs() : await runBullmq()

const scripts = new Set(["fcall", "evalsha", "eval"])
for (const p of phases) {
  const per = (x: number) => (x / p.tasks).toFixed(x / p.tasks < 10 ? 2 : 1)
  const fn = Object.entries(p.stats).filter(([c]) => scripts.has(c)).reduce((a, [, s]) => ({ calls: a.calls + s.calls, usec: a.usec + s.usec }), { calls: 0, usec: 0 })
  const inner = Object.entries(p.stats).filter(([c]) => !scripts.has(c)).sort((a, b) => b[1].calls - a[1].calls)
  console.log(`\n${p.name}: ${p.tasks} tasks in ${p.seconds.toFixed(2)} s (${Math.round(p.tasks / p.seconds).toLocaleString("en-US")} per second)`)
  console.log(`  function calls per task ${per(fn.calls)}, their server time ${per(fn.usec)} µs per task; server CPU ${per(p.cpuUs)} µs per task; client CPU ${per(p.clientCpuUs)} µs per task`)
  if (p.instructions !== undefined) console.log(`  instructions per task (callgrind): ${Math.round(p.instructions / p.tasks).toLocaleString("en-US")}`)
  console.log(`  commands per task: ${inner.map(([c, s]) => `${c} ${per(s.calls)}`).join(", ")}`)
}
await redis.stop()
