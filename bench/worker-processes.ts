/**
 * K worker processes for the cluster bench (each `node bench/cluster-worker.ts` with an IPC channel),
 * forked once and kept for the whole bench so their JIT warms up in the warm-up runs like the harness's.
 * Per measured run: `open` (each connects an orchestrator to the run's topology), `go` (all start their
 * pools at once, so a drain measures workers and not start-up), `stop` (their CPU time). Every child
 * is ended by its pid if it has not exited 10 s after `close`, and when the harness exits.
 */
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { OrchestratorOptions } from "../src/Orchestrator.ts"
import type { FromWorker, ToWorker } from "./cluster-worker.ts"

const script = fileURLToPath(new URL("./cluster-worker.ts", import.meta.url))

export interface WorkerProcesses {
  readonly count: number
  /** Each process opens an orchestrator with `options` and a pool of `workers` turns; resolves when all are connected. */
  readonly open: (options: OrchestratorOptions, workers: number) => Promise<void>
  readonly go: () => void
  /** Stops every pool; resolves with their CPU time (µs, user + system) between `go` and `stop`, summed. */
  readonly stop: () => Promise<number>
  readonly close: () => Promise<void>
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

const TIMEOUT_MS = 60_000

const nextMessage = <T extends FromWorker["_tag"]>(child: ChildProcess, tag: T) =>
  new Promise<Extract<FromWorker, { _tag: T }>>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer)
      child.off("exit", onExit)
      child.off("message", onMessage)
    }
    const timer = setTimeout(() => (done(), reject(new Error(`bench worker ${child.pid}: no ${tag} within ${TIMEOUT_MS} ms`))), TIMEOUT_MS)
    const onExit = (code: number | null) => (done(), reject(new Error(`bench worker ${child.pid} exited (${code}) before ${tag}`)))
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

export const forkWorkerProcesses = (count: number): WorkerProcesses => {
  const children = Array.from({ length: count }, () => {
    const child = fork(script, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
    live.add(child)
    child.once("exit", () => live.delete(child))
    return child
  })
  const sendAll = (m: ToWorker) => children.forEach((c) => c.send(m))
  return {
    count,
    open: async (options, workers) => {
      const ready = Promise.all(children.map((c) => nextMessage(c, "ready")))
      sendAll({ _tag: "open", options, workers })
      await ready
    },
    go: () => sendAll({ _tag: "go" }),
    stop: async () => {
      const stopped = Promise.all(children.map((c) => nextMessage(c, "stopped")))
      sendAll({ _tag: "stop" })
      return (await stopped).reduce((a, m) => a + m.cpuUs, 0)
    },
    close: async () => {
      for (const c of children) if (c.connected) c.send({ _tag: "exit" } satisfies ToWorker)
      await Promise.all(children.map((c) => {
        const timer = setTimeout(() => killByPid(c), 10_000)
        return exited(c).finally(() => clearTimeout(timer))
      }))
    }
  }
}
