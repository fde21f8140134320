/**
 * One worker process of `npm run bench:cluster` (forked by bench/worker-processes.ts): an `Orchestrator`
 * opened with the options in BENCH_ORCHESTRATOR (JSON: redisUrl or clusterNodes, namespace, partitions)
 * running the bench agent with BENCH_WORKERS concurrent turns, each turn a no-op that completes the task.
 *
 * IPC: it connects (building its runtime) and sends `{ ready }`; on `{ go }` it starts its workers; on
 * `{ stop }` it sends `{ cpuUs }` (its CPU time since `go`), stops gracefully and exits. It exits as well
 * when the harness goes away (IPC disconnect).
 */
import { AgentWorkerConfig } from "../src/Config.ts"
import { Orchestrator, type OrchestratorOptions } from "../src/Orchestrator.ts"
import { benchAgent } from "./ours.ts"
import type { TurnHandler } from "./system.ts"

export type ToWorker = { readonly _tag: "go" } | { readonly _tag: "stop" }
export type FromWorker = { readonly _tag: "ready" } | { readonly _tag: "stopped"; readonly cpuUs: number }

const send = (m: FromWorker): Promise<void> => new Promise((resolve) => process.send!(m, () => resolve()))

const done: TurnHandler = () => ({ _tag: "Done" })
const agent = benchAgent(() => done)
const orchestrator = new Orchestrator(JSON.parse(process.env.BENCH_ORCHESTRATOR ?? "{}") as OrchestratorOptions)
orchestrator.registerRunner({
  agent,
  agentWorkerConfig: new AgentWorkerConfig({ workers: Number(process.env.BENCH_WORKERS ?? 100) })
})

let cpu0 = process.cpuUsage()
process.on("disconnect", () => process.exit(0))
process.on("message", (m: ToWorker) => {
  if (m._tag === "go") {
    cpu0 = process.cpuUsage()
    orchestrator.start().catch((e: unknown) => {
      console.error(`worker ${process.pid} failed to start: ${String(e)}`)
      process.exit(1)
    })
  } else if (m._tag === "stop") {
    const cpu = process.cpuUsage(cpu0)
    void send({ _tag: "stopped", cpuUs: cpu.user + cpu.system })
      .then(() => orchestrator.stop())
      .finally(() => process.exit(0))
  }
})

// Connect, check the namespace and load the scripts now, so `go` only starts the pools.
await orchestrator.enqueueTasks(agent, [])
await send({ _tag: "ready" })
