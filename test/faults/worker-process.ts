/**
 * A real worker process for the fault tests: `node test/faults/worker-process.ts`, configured by the
 * environment, runs one agent ("fault") through the public Promise API (Orchestrator.run) until SIGTERM,
 * SIGINT, or a signal that kills it outright (the tests send SIGKILL and SIGSTOP/SIGCONT).
 *
 * The agent runs `payload.turns` turns; each turn "works" for WORK_MS (or `payload.workMs`) and then
 * checkpoints, the last one completes with `{ by: LABEL, pid, turns, lease }` so a test can tell which
 * process finished a task. Each turn appends to `payload.log`, as a conversation grows, and fails the task
 * fatally if the payload it got does not have one log entry per turn the task completed (a checkpoint lost or
 * read wrong); with
 * CHECKPOINT_DELTAS=1 the process stores checkpoints as deltas (ADR 0018), so a task's payload becomes a chain
 * that processes killed mid-turn leave for others to read. With LOG_TURNS=1 it prints one JSON line per turn start and end; it always
 * prints `{"ev":"ready"}` once its workers run. Effect's warnings (e.g. a rejected late commit) go to
 * the same output, which the parent test reads.
 *
 * With STOP_AT_TURN_END=1 the process stops itself (SIGSTOP) when a turn's work is done, just before
 * the turn returns and its result is committed: the fencing test resumes it with SIGCONT later.
 *
 * Environment: REDIS_URL (or CLUSTER_NODES and PARTITIONS), FAULT_NS (namespace), LABEL, WORK_MS, WORKERS, BATCH, MAX_RETRIES, HB_INTERVAL,
 * HB_THRESHOLD, HB_GRACE, MAINT_INTERVAL, SHUTDOWN_TIMEOUT, TURN_TIMEOUT, LOG_TURNS, STOP_AT_TURN_END, PROJECT_METRICS
 * ("0": `projectMetrics: false`), CHECKPOINT_DELTAS ("1": `checkpointDeltas: true`).
 */
import { Continue, defineAgent, Done } from "../../src/Agent.ts"
import { FatalAgentError } from "../../src/AgentErrors.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"

export interface FaultPayload {
  /** Turns this task runs in all. */
  readonly turns: number
  /** Turns done so far (checkpointed). */
  readonly done: number
  /** Work per turn in ms, unless the process sets WORK_MS. */
  readonly workMs?: number
  /** One entry per turn done (`<label>:<attempt>` of the process that did it). */
  readonly log?: ReadonlyArray<string>
  /** A fixed text the first turn adds, so that what a later turn appends is small beside the payload. */
  readonly note?: string
}

export interface FaultOutput {
  readonly by: string
  readonly pid: number
  readonly turns: number
  readonly lease: number
}

const env = process.env
const num = (name: string, fallback: number): number => (env[name] === undefined ? fallback : Number(env[name]))
const label = env.LABEL ?? `w${process.pid}`
const logTurns = env.LOG_TURNS === "1"
const workOverride = env.WORK_MS === undefined ? undefined : Number(env.WORK_MS)
const stopAtTurnEnd = env.STOP_AT_TURN_END === "1"

const say = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ ...line, label, pid: process.pid })}\n`)

const agent = defineAgent<FaultPayload>({
  name: "fault",
  turn: async (ctx) => {
    const { turns, done } = ctx.payload
    const log = ctx.payload.log ?? []
    // One entry per turn the task has completed (its hash's count, not the payload's own `done`).
    if (log.length !== ctx.turn || done !== ctx.turn) {
      throw new FatalAgentError({ message: `turn ${ctx.turn} got a payload with done=${done} and ${log.length} log entries` })
    }
    if (logTurns) say({ ev: "turn-start", taskId: ctx.taskId, turn: done, lease: ctx.attempt })
    // Plain timer work that ignores the abort signal: a late finish after SIGSTOP/SIGCONT is attempted.
    await new Promise((r) => setTimeout(r, workOverride ?? ctx.payload.workMs ?? 2))
    // A pause at the worst moment: the turn's work is done and its commit is next.
    if (stopAtTurnEnd) process.kill(process.pid, "SIGSTOP")
    if (logTurns) say({ ev: "turn-end", taskId: ctx.taskId, turn: done, lease: ctx.attempt })
    const next = { ...ctx.payload, done: done + 1, log: [...log, `${label}:${ctx.attempt}`], note: ctx.payload.note ?? "n".repeat(200) }
    return done + 1 >= turns
      ? Done({ by: label, pid: process.pid, turns: done + 1, lease: ctx.attempt } satisfies FaultOutput, next)
      : Continue(next)
  }
})

// CLUSTER_NODES="h:p,h:p,…" runs against a Redis Cluster (with PARTITIONS partitions) instead of REDIS_URL.
const clusterNodes = (env.CLUSTER_NODES ?? "").split(",").filter((s) => s !== "").map((s) => {
  const [host, port] = s.split(":")
  return { host: host!, port: Number(port) }
})
const orchestrator = new Orchestrator({
  ...(clusterNodes.length > 0 ? { clusterNodes } : { redisUrl: env.REDIS_URL ?? "redis://127.0.0.1:6379" }),
  namespace: env.FAULT_NS ?? "faults",
  partitions: num("PARTITIONS", 1),
  projectMetrics: env.PROJECT_METRICS !== "0"
})
orchestrator.registerRunner({
  agent,
  agentWorkerConfig: new AgentWorkerConfig({
    workers: num("WORKERS", 4),
    batchSize: num("BATCH", 4),
    maxRetries: num("MAX_RETRIES", 50),
    heartbeatInterval: num("HB_INTERVAL", 0.2),
    missedHeartbeatsThreshold: num("HB_THRESHOLD", 2),
    missedHeartbeatsGracePeriod: num("HB_GRACE", 0.2),
    shutdownTimeout: num("SHUTDOWN_TIMEOUT", 1),
    turnTimeout: num("TURN_TIMEOUT", 60),
    checkpointDeltas: env.CHECKPOINT_DELTAS === "1"
  }),
  maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: num("MAINT_INTERVAL", 0.2) })
})

await orchestrator.start()
say({ ev: "ready" })
await orchestrator.run({ handleSignals: true })
say({ ev: "stopped" })
process.exit(0)
