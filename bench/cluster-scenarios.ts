/**
 * The measurements of the cluster bench, each run on an emptied topology with a fresh client
 * orchestrator (connected before the clock starts):
 *
 * - `enqueue`: bulk enqueue, `enqueueTasks` with 50 tasks per call, one call at a time (scenario 2 of
 *   `npm run bench`); jobs over the time of all calls.
 * - `drain`: a prefilled queue drained by one worker pool with `concurrency` turns at once, in the
 *   harness process (scenario 4 of `npm run bench`).
 * - `drain-processes`: the same queue drained by K worker processes with a pool of `concurrency` each,
 *   connected to the topology after the queue is filled and started together.
 *
 * A drain's rate is jobs over the time from the first TaskClaimed to the last TaskCompleted, both as the
 * observer reads them from the partition logs (one blocking XREAD per log, on the server that holds it),
 * so one clock times the in-process and the multi-process drains alike. CPU is counted over the
 * measured window: the client's (this process, observer included, plus the worker processes) and each
 * Redis server's, per job.
 */
import { observeStreams } from "./observer.ts"
import { openOursWith } from "./ours.ts"
import { makePayload } from "./payload.ts"
import { BULK, prefill, TIMEOUT_MS } from "./scenarios.ts"
import type { SystemRun } from "./system.ts"
import type { Topology } from "./topology.ts"
import type { WorkerProcesses } from "./worker-processes.ts"

export interface ClusterSizes {
  /** Tasks enqueued in the enqueue measurement. */
  readonly enqueue: number
  /** Tasks prefilled and drained in each drain. */
  readonly drain: number
}

export interface ClusterSettings {
  /** Worker pool size (concurrent turns) per process. */
  readonly concurrency: number
  /** The worker processes of `drain-processes`, forked once for the whole bench. */
  readonly workerProcesses: WorkerProcesses
}

export interface ClusterMeasurement {
  readonly jobs: number
  readonly rate: number
  /** Client CPU (harness and worker processes) per job, µs. */
  readonly clientCpuUs: number
  /** The worker processes' part of it (0 when the harness runs the workers). */
  readonly workerProcessesCpuUs: number
  /** Each Redis server's CPU per job, µs, in the order of the topology's servers. */
  readonly redisCpuUs: ReadonlyArray<number>
}

export interface ClusterScenario {
  readonly id: "enqueue" | "drain" | "drain-processes"
  readonly title: string
  /** Client processes doing the work. */
  readonly processes: (settings: ClusterSettings) => number
  readonly run: (topology: Topology, sizes: ClusterSizes, settings: ClusterSettings) => Promise<ClusterMeasurement>
}

/** Opens a client on the emptied topology, connected (runtime built, scripts loaded) before `f` runs. */
const withClient = async <A>(topology: Topology, f: (run: SystemRun) => Promise<A>): Promise<A> => {
  await topology.flush()
  const run = await openOursWith(topology.options)
  try {
    await run.enqueueBulk([])
    return await f(run)
  } finally {
    await run.close()
  }
}

/** Starts counting this process's and the servers' CPU; `stop` returns the totals (µs). */
const cpuWindow = async (topology: Topology) => {
  const redis0 = await topology.cpuSeconds()
  const client0 = process.cpuUsage()
  return {
    stop: async () => {
      const client = process.cpuUsage(client0)
      const redis = await topology.cpuSeconds()
      return { clientUs: client.user + client.system, redisUs: redis.map((s, k) => (s - redis0[k]!) * 1e6) }
    }
  }
}

const perJob = (cpu: { clientUs: number; redisUs: ReadonlyArray<number> }, jobs: number, workerProcessesUs = 0) => ({
  clientCpuUs: (cpu.clientUs + workerProcessesUs) / jobs,
  workerProcessesCpuUs: workerProcessesUs / jobs,
  redisCpuUs: cpu.redisUs.map((us) => us / jobs)
})

const enqueue: ClusterScenario = {
  id: "enqueue",
  title: "Bulk enqueue (50 per call)",
  processes: () => 1,
  run: (topology, sizes) =>
    withClient(topology, async (run) => {
      const calls = Math.max(1, Math.round(sizes.enqueue / BULK))
      const cpu = await cpuWindow(topology)
      const t0 = performance.now()
      for (let c = 0; c < calls; c++) {
        await run.enqueueBulk(Array.from({ length: BULK }, (_, k) => makePayload(c * BULK + k)))
      }
      const secs = (performance.now() - t0) / 1000
      const jobs = calls * BULK
      return { jobs, rate: jobs / secs, ...perJob(await cpu.stop(), jobs) }
    })
}

/** Watches every partition log for the first claim and the completions. */
const drainObserver = async (topology: Topology) => {
  let first = Infinity
  let last = 0
  const observer = await observeStreams(topology.logs, (fields, at) => {
    const e = fields[1] ?? ""
    if (e.includes('"_tag":"TaskCompleted"')) {
      last = at
      return true
    }
    if (at < first && e.includes('"_tag":"TaskClaimed"')) first = at
    return false
  })
  return { observer, seconds: () => (last - first) / 1000 }
}

const drain: ClusterScenario = {
  id: "drain",
  title: "Drain, one worker process",
  processes: () => 1,
  run: (topology, sizes, settings) =>
    withClient(topology, async (run) => {
      const n = sizes.drain
      await prefill(run, 0, n)
      const { observer, seconds } = await drainObserver(topology)
      const cpu = await cpuWindow(topology)
      try {
        await run.startWorkers(settings.concurrency, () => ({ _tag: "Done" }))
        await observer.waitFor(n, TIMEOUT_MS)
      } finally {
        observer.stop()
      }
      return { jobs: n, rate: n / seconds(), ...perJob(await cpu.stop(), n) }
    })
}

const drainProcesses: ClusterScenario = {
  id: "drain-processes",
  title: "Drain, worker processes",
  processes: (settings) => settings.workerProcesses.count,
  run: (topology, sizes, settings) =>
    withClient(topology, async (run) => {
      const n = sizes.drain
      await prefill(run, 0, n)
      const workers = settings.workerProcesses
      await workers.open(topology.options, settings.concurrency)
      let used: { clientUs: number; redisUs: ReadonlyArray<number> } | undefined
      let childrenUs = Number.NaN
      let secs = Number.NaN
      try {
        const { observer, seconds } = await drainObserver(topology)
        const cpu = await cpuWindow(topology)
        try {
          workers.go()
          await observer.waitFor(n, TIMEOUT_MS)
        } finally {
          observer.stop()
        }
        used = await cpu.stop()
        secs = seconds()
      } finally {
        childrenUs = await workers.stop()
      }
      return { jobs: n, rate: n / secs, ...perJob(used, n, childrenUs) }
    })
}

export const clusterScenarios: ReadonlyArray<ClusterScenario> = [enqueue, drain, drainProcesses]
