/**
 * Our side: one `Orchestrator` per run (namespace = run id, one partition; the cluster bench opens it
 * with its own connection and partition settings), with a no-op agent whose turn calls the harness's
 * handler. Enqueue is `enqueueTask` / `enqueueTasks`; workers are
 * `registerRunner` with `AgentWorkerConfig({ workers: concurrency })` and otherwise default settings.
 * Every transition writes its event to the task's history list and the partition log, as in production.
 */
import { Continue, defineAgent, Done } from "../src/Agent.ts"
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator, type OrchestratorOptions } from "../src/Orchestrator.ts"
import { partitionKeys } from "../streams/Keys.ts"
import type { BenchPayload } from "./payload.ts"
import type { OpenOptions, System, SystemRun, TurnHandler } from "./system.ts"

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/

/** The bench agent ("noop"): each turn asks `handler()` whether the task is done or continues. */
export const benchAgent = (handler: () => TurnHandler) =>
  defineAgent<BenchPayload>({
    name: "noop",
    turn: (ctx) => {
      const r = handler()(ctx.payload)
      return Promise.resolve(r._tag === "Done" ? Done({ i: ctx.payload.i, done: true }) : Continue(r.payload))
    }
  })

const COMPLETED_OUTPUT = /"_tag":"TaskCompleted".*"output":\{"i":(\d+)/

/**
 * The job index of a partition-log entry if it is the task's completion, else undefined: read from the entry's
 * text, as BullMQ's side reads only its event's name and return value (parsing our whole envelope cost ~4 µs per
 * job of the harness's CPU, on the measured path with one slot).
 */
export const completedIndex = (fields: ReadonlyArray<string>): number | undefined => {
  const m = COMPLETED_OUTPUT.exec(fields[1] ?? "")
  return m === null ? undefined : Number(m[1])
}

let checkpointDeltas = AgentWorkerConfig.defaults.checkpointDeltas
/** Our workers store every checkpoint whole from now on (`--whole-checkpoints`; deltas are the default, ADR 0018). */
export const useWholeCheckpoints = (): void => {
  checkpointDeltas = false
}

/** One run on an orchestrator opened with `options` (its namespace is the run's queue). */
export const openOursWith = async (options: OrchestratorOptions & { readonly namespace: string }): Promise<SystemRun> => {
  const namespace = options.namespace
  let handler: TurnHandler = () => ({ _tag: "Done" })
  const agent = benchAgent(() => handler)
  const orchestrator = new Orchestrator(options)
  // Connect and load the function library now, as BullMQ's side waits until its queue is ready: otherwise the
  // first enqueue of a measured window would build the orchestrator's runtime (11–34 ms).
  await orchestrator.getTaskData("bench-ready")
  let registered = false
  const events = partitionKeys({ namespace, partitions: options.partitions ?? 1 }, 0).events

  return {
    enqueue: async (payload) => {
      await orchestrator.enqueueTask(agent, agent.createTask({ ownerId: "bench", payload }))
    },
    enqueueBulk: async (payloads) => {
      const results = await orchestrator.enqueueTasks(
        agent,
        payloads.map((payload) => agent.createTask({ ownerId: "bench", payload }))
      )
      const failed = results.find((r) => r.error !== undefined)
      if (failed !== undefined) throw new Error(`enqueue of ${failed.id} failed: ${String(failed.error)}`)
    },
    startWorkers: async (concurrency, h) => {
      handler = h
      if (!registered) {
        orchestrator.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: concurrency, checkpointDeltas }) })
        registered = true
      }
      await orchestrator.start()
    },
    // Partition 0's log: all of them with one partition (the cluster bench watches every partition's log).
    completions: { stream: events, parse: completedIndex },
    keyKind: (key) => key.startsWith(`{${namespace}`) ? key.replace(UUID, "*") : undefined,
    close: () => orchestrator.stop()
  }
}

const openOurs = (extra: OrchestratorOptions = {}) => (options: OpenOptions): Promise<SystemRun> =>
  openOursWith({ ...extra, redisUrl: options.url, namespace: options.runId })

export const ours: System = { label: "ours", side: "ours", continuation: "readd", open: openOurs() }

/** Ours in a worker process with `projectMetrics: false` (`--no-projection`): nobody projects the metrics. */
export const oursNotProjecting: System = {
  label: "ours (projectMetrics: false)",
  side: "ours",
  continuation: "readd",
  open: openOurs({ projectMetrics: false })
}
