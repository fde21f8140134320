/**
 * One worker process of `npm run bench:cluster` (forked by bench/worker-processes.ts). It lives for the
 * whole bench, so its code is as warmed up (JIT) as the harness's own, and opens one `Orchestrator` per
 * measured run, running the bench agent whose turns complete at once.
 *
 * IPC: `{ open, options, workers }` opens an orchestrator with those options (redisUrl or clusterNodes,
 * namespace, partitions), connects it and answers `{ ready }`; `{ go }` starts its worker pool of
 * `workers` turns; `{ stop }` stops it gracefully and answers `{ stopped, cpuUs }` (CPU time between
 * `go` and `stop`). It exits on `{ exit }` or when the harness goes away (IPC disconnect).
 */
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator, type OrchestratorOptions } from "../src/Orchestrator.ts"
import { benchAgent } from "./ours.ts"
import type { TurnHandler } from "./system.ts"

export type ToWorker =
  | { readonly _tag: "open"; readonly options: OrchestratorOptions; readonly workers: number }
  | { readonly _tag: "go" }
  | { readonly _tag: "stop" }
  | { readonly _tag: "exit" }
export type FromWorker = { readonly _tag: "ready" } | { readonly _tag: "stopped"; readonly cpuUs: number }

const send = (m: FromWorker) => process.send!(m)
const done: TurnHandler = () => ({ _tag: "Done" })
const agent = benchAgent(() => done)

let orchestrator: Orchestrator | undefined
let cpu0 = process.cpuUsage()

const fail = (what: string) => (e: unknown) => {
  console.error(`bench worker ${process.pid}: ${what} failed: ${String(e)}`)
  process.exit(1)
}

process.on("disconnect", () => process.exit(0))
process.on("message", (m: ToWorker) => {
  switch (m._tag) {
    case "open": {
      const o = new Orchestrator(m.options)
      o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: m.workers }) })
      orchestrator = o
      // Connect, check the namespace and load the scripts now, so `go` only starts the pool.
      o.enqueueTasks(agent, []).then(() => send({ _tag: "ready" }), fail("open"))
      break
    }
    case "go":
      cpu0 = process.cpuUsage()
      orchestrator?.start().catch(fail("start"))
      break
    case "stop": {
      const cpu = process.cpuUsage(cpu0)
      const o = orchestrator
      orchestrator = undefined
      void (o?.stop() ?? Promise.resolve()).then(() => send({ _tag: "stopped", cpuUs: cpu.user + cpu.system }), fail("stop"))
      break
    }
    case "exit":
      void (orchestrator?.stop() ?? Promise.resolve()).finally(() => process.exit(0))
      break
  }
})
