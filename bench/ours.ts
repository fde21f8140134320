/**
 * Our side: one `Orchestrator` per run (namespace = run id, one partition), with a no-op agent whose
 * turn calls the harness's handler. Enqueue is `enqueueTask` / `enqueueTasks`; workers are
 * `registerRunner` with `AgentWorkerConfig({ workers: concurrency })` and otherwise default settings.
 * Every transition writes its event to the task's history list and the partition log, as in production.
 */
import { Continue, defineAgent, Done } from "../src/Agent.ts"
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator } from "../src/Orchestrator.ts"
import { partitionKeys } from "../streams/Keys.ts"
import type { BenchPayload } from "./payload.ts"
import type { OpenOptions, System, SystemRun, TurnHandler } from "./system.ts"

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/

const openOurs = async (options: OpenOptions): Promise<SystemRun> => {
  const namespace = options.runId
  let handler: TurnHandler = () => ({ _tag: "Done" })
  const agent = defineAgent<BenchPayload>({
    name: "noop",
    turn: (ctx) => {
      const r = handler(ctx.payload)
      return Promise.resolve(r._tag === "Done" ? Done({ i: ctx.payload.i, done: true }) : Continue(r.payload))
    }
  })
  const orchestrator = new Orchestrator({ redisUrl: options.url, namespace })
  let registered = false
  const events = partitionKeys({ namespace, partitions: 1 }, 0).events

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
        orchestrator.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: concurrency }) })
        registered = true
      }
      await orchestrator.start()
    },
    completions: {
      stream: events,
      parse: (fields) => {
        const e = fields[1]
        if (e === undefined || !e.includes('"_tag":"TaskCompleted"')) return undefined
        return (JSON.parse(e) as { event: { output: { i: number } } }).event.output.i
      }
    },
    keyKind: (key) => key.startsWith(`{${namespace}`) ? key.replace(UUID, "*") : undefined,
    close: () => orchestrator.stop()
  }
}

export const ours: System = { label: "ours", side: "ours", continuation: "readd", open: openOurs }
