/**
 * K worker processes for the cluster bench (each `node bench/cluster-worker.ts` with an IPC channel):
 * forked and connected up front, then started together with `go`, so a drain measures the workers and
 * not Node's start-up. Every child is ended by its pid: after `stop` if it has not exited in 10 s, and
 * when the harness exits.
 */
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { OrchestratorOptions } from "../src/Orchestrator.ts"
import type { FromWorker, ToWorker } from "./cluster-worker.ts"

const script = fileURLToPath(new URL("./cluster-worker.ts", import.meta.url))

export interface WorkerProcesses {
  readonly go: () => void
  /** Stops every process and returns their CPU time (µs, user + system) since `go`, summed. */
  readonly stop: () => Promise<number>
}

const live = new Set<ChildProcess>()
const killByPid = (child: ChildProcess) => {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  try {
    process.kill(child.pid, "SIGKILL")
  } catch {
    // already gone
  }
}
process.once("exit", () => live.forEach(killByPid))

const nextMessage = <T extends FromWorker["_tag"]>(child: ChildProcess, tag: T, timeoutMs: number) =>
  new Promise<Extract<FromWorker, { _tag: T }>>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer)
      child.off("exit", onExit)
      child.off("message", onMessage)
    }
    const timer = setTimeout(() => (done(), reject(new Error(`worker ${child.pid}: no ${tag} within ${timeoutMs} ms`))), timeoutMs)
    const onExit = (code: number | null) => (done(), reject(new Error(`worker ${child.pid} exited (${code}) before ${tag}`)))
    const onMessage = (m: FromWorker) => {
      if (m._tag !== tag) return
      done()
      resolve(m as Extract<FromWorker, { _tag: T }>)
    }
    child.once("exit", onExit)
    child.on("message", onMessage)
  })

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once("exit", () => resolve())))

export const startWorkerProcesses = async (
  count: number,
  orchestrator: OrchestratorOptions,
  workers: number
): Promise<WorkerProcesses> => {
  const children = Array.from({ length: count }, () => {
    const child = fork(script, [], {
      env: { ...process.env, BENCH_ORCHESTRATOR: JSON.stringify(orchestrator), BENCH_WORKERS: String(workers) },
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    live.add(child)
    child.once("exit", () => live.delete(child))
    return child
  })
  const stopAll = async () => {
    const stopped = Promise.all(children.map((c) => nextMessage(c, "stopped", 10_000).catch(() => ({ cpuUs: Number.NaN }))))
    for (const c of children) if (c.connected) c.send({ _tag: "stop" } satisfies ToWorker)
    const cpu = await stopped
    await Promise.all(children.map((c) => {
      const timer = setTimeout(() => killByPid(c), 10_000)
      return exited(c).finally(() => clearTimeout(timer))
    }))
    return cpu.reduce((a, m) => a + m.cpuUs, 0)
  }
  try {
    await Promise.all(children.map((c) => nextMessage(c, "ready", 60_000)))
  } catch (e) {
    children.forEach(killByPid)
    await Promise.all(children.map(exited))
    throw e
  }
  return {
    go: () => children.forEach((c) => c.send({ _tag: "go" } satisfies ToWorker)),
    stop: stopAll
  }
}
