/**
 * Shared machinery of the fault tests: spawning and killing real worker processes
 * (test/faults/worker-process.ts), private redis-server instances on free loopback ports, namespace
 * cleanup, and the verification every fault test ends with: each task reached exactly one terminal
 * state, and its history folds (projections/TaskDecider.ts) to the state in its status hash.
 *
 * Every process and server started here is tracked and ended by its pid in `cleanupAll`.
 */
import { expect } from "vitest"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { isDeepStrictEqual } from "node:util"
import { Effect } from "effect"
import { Redis } from "ioredis"
import { fold, type TaskState } from "../../projections/TaskDecider.ts"
import type { Envelope } from "../../streams/TaskEvent.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { defineAgent, Done } from "../../src/Agent.ts"
import type { FaultPayload } from "./worker-process.ts"

export const sharedRedisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

const workerScript = fileURLToPath(new URL("./worker-process.ts", import.meta.url))

/** The agent as the enqueuing side sees it (the turn runs only in worker processes). */
export const faultAgent = defineAgent<FaultPayload>({ name: "fault", turn: () => Promise.resolve(Done(null)) })

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Polls `f` until `ok` holds, or throws with the last value after `ms`. */
export const waitFor = async <A>(f: () => Promise<A>, ok: (a: A) => boolean, ms = 30_000, what = "condition"): Promise<A> => {
  const end = Date.now() + ms
  for (;;) {
    const a = await f()
    if (ok(a)) return a
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}; last value ${JSON.stringify(a)?.slice(0, 500)}`)
    await sleep(50)
  }
}

// ---------------------------------------------------------------------------------------------------
// Processes

export interface WorkerProcess {
  readonly label: string
  readonly pid: number
  readonly child: ChildProcess
  /** Everything it printed (stdout and stderr), line by line. */
  readonly lines: Array<string>
  readonly exited: Promise<number | string | null>
  readonly alive: () => boolean
  /** It printed its "ready" line (its workers run). */
  readonly ready: () => boolean
}

const children = new Set<ChildProcess>()

export const spawnWorker = async (options: {
  readonly label: string
  readonly redisUrl: string
  readonly namespace: string
  readonly env?: Record<string, string | number>
  /** Wait for its "ready" line (default true). */
  readonly waitReady?: boolean
}): Promise<WorkerProcess> => {
  const env: Record<string, string> = { ...process.env as Record<string, string> }
  for (const [k, v] of Object.entries(options.env ?? {})) env[k] = String(v)
  env.REDIS_URL = options.redisUrl
  env.FAULT_NS = options.namespace
  env.LABEL = options.label
  const child = spawn(process.execPath, [workerScript], { env, stdio: ["ignore", "pipe", "pipe"] })
  children.add(child)
  const lines: Array<string> = []
  let alive = true
  const exited = new Promise<number | string | null>((resolve) =>
    child.once("exit", (code, signal) => {
      alive = false
      children.delete(child)
      resolve(signal ?? code)
    })
  )
  for (const stream of [child.stdout!, child.stderr!]) {
    let buffer = ""
    stream.setEncoding("utf8")
    stream.on("data", (chunk: string) => {
      buffer += chunk
      const parts = buffer.split("\n")
      buffer = parts.pop()!
      lines.push(...parts)
      if (!ready && parts.some((l) => l.includes('"ev":"ready"'))) ready = true
    })
  }
  let ready = false
  const w: WorkerProcess = {
    label: options.label,
    pid: child.pid!,
    child,
    lines,
    exited,
    alive: () => alive,
    ready: () => ready
  }
  if (options.waitReady ?? true) {
    await Promise.race([
      waitFor(async () => ready, (x) => x, 30_000, `${options.label} ready`),
      exited.then((how) => {
        throw new Error(`${options.label} exited (${how}) before it was ready:\n${lines.join("\n")}`)
      })
    ])
  }
  return w
}

/** Sends a signal to one child by its pid (no-op when it is gone). */
export const signal = (w: WorkerProcess, sig: NodeJS.Signals) => {
  if (w.alive()) process.kill(w.pid, sig)
}

export const killWorker = async (w: WorkerProcess) => {
  if (!w.alive()) return
  process.kill(w.pid, "SIGCONT")
  process.kill(w.pid, "SIGKILL")
  await w.exited
}

/** Ends every child process this test file started (SIGKILL, by pid) and waits for their exit. */
export const killAllWorkers = async () => {
  await Promise.all([...children].map((child) =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once("exit", () => resolve())
      try {
        process.kill(child.pid!, "SIGCONT")
        process.kill(child.pid!, "SIGKILL")
      } catch {
        resolve()
      }
    })
  ))
}

/** The pid in a worker id (`<host>-<pid>-<6 hex>`). */
export const pidOfWorker = (workerId: string | undefined): number | undefined => {
  const m = workerId === undefined ? null : /-(\d+)-[0-9a-f]{6}$/.exec(workerId)
  return m === null ? undefined : Number(m[1])
}

// ---------------------------------------------------------------------------------------------------
// Redis servers

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })

export interface PrivateRedis {
  readonly port: number
  readonly url: string
  readonly dir: string | undefined
  pid: () => number
  /** SIGKILLs the server (by pid) and waits for it to be gone. */
  kill: () => Promise<void>
  /** Starts it again on the same port (and AOF directory). */
  restart: () => Promise<void>
  /** Kills it and removes its directory. */
  dispose: () => Promise<void>
}

const servers = new Set<PrivateRedis>()

/**
 * A redis-server of its own on a free loopback port; with `aof`, an append-only file fsynced on every
 * write in a fresh temporary directory, so a restart loses nothing that was acknowledged.
 */
export const startPrivateRedis = async (options: { readonly aof?: boolean } = {}): Promise<PrivateRedis> => {
  const port = await freePort()
  const dir = options.aof ? mkdtempSync(join(tmpdir(), "factorial-faults-")) : undefined
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no", "--protected-mode", "no"]
  if (dir === undefined) args.push("--appendonly", "no")
  else args.push("--appendonly", "yes", "--appendfsync", "always", "--dir", dir)
  let proc: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()
  const start = async () => {
    const p = spawn("redis-server", args, { stdio: ["ignore", "ignore", "pipe"] })
    proc = p
    children.add(p)
    exited = new Promise((resolve) => p.once("exit", () => {
      children.delete(p)
      resolve()
    }))
    await waitFor(async () => {
      const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
      probe.on("error", () => {})
      try {
        await probe.connect()
        return (await probe.ping()) === "PONG"
      } catch {
        return false
      } finally {
        probe.disconnect()
      }
    }, (x) => x, 15_000, `redis-server on ${port}`)
  }
  const kill = async () => {
    if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) {
      process.kill(proc.pid!, "SIGKILL")
      await exited
    }
  }
  await start()
  const server: PrivateRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    pid: () => proc!.pid!,
    kill,
    restart: start,
    dispose: async () => {
      await kill()
      servers.delete(server)
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
    }
  }
  servers.add(server)
  return server
}

export const disposeAllRedis = async () => {
  await Promise.all([...servers].map((s) => s.dispose()))
}

/** Deletes every key of a namespace (all partitions and the namespace keys). */
export const deleteNamespace = async (redisUrl: string, namespace: string) => {
  const conn = new Redis(redisUrl)
  try {
    for (const pattern of [`{${namespace}:*`, `{${namespace}}*`]) {
      let cursor = "0"
      do {
        const [next, keys] = await conn.scan(cursor, "MATCH", pattern, "COUNT", 1000)
        cursor = next
        if (keys.length > 0) await conn.del(...keys)
      } while (cursor !== "0")
    }
  } finally {
    conn.disconnect()
  }
}

// ---------------------------------------------------------------------------------------------------
// Verification

export interface TaskReport {
  readonly id: string
  readonly state: TaskState | undefined
  readonly history: ReadonlyArray<Envelope>
}

export interface Verdict {
  readonly tasks: number
  readonly completed: number
  readonly failed: number
  readonly cancelled: number
  /** Tasks with no terminal state. */
  readonly lost: ReadonlyArray<string>
  /** Tasks with more than one terminal event (or more than one TaskCompleted). */
  readonly duplicates: ReadonlyArray<string>
  /** Tasks whose history does not fold to the state in their status hash. */
  readonly foldMismatches: ReadonlyArray<string>
  /** Tasks whose checkpoints (TurnCompleted) are not exactly 1, 2, …, n. */
  readonly badCheckpoints: ReadonlyArray<string>
  /** Tasks where a turn was started more than once per lost lease (repeats > recoveries + releases). */
  readonly excessRepeats: ReadonlyArray<string>
  readonly recoveries: number
  readonly claims: number
  /** For each task found wanting above: its stored state and history, one event a line (for the failure message). */
  readonly details: ReadonlyMap<string, string>
  /** Turns started again after a lost lease (claims beyond the turns a task needed). */
  readonly repeatedTurns: number
  /** Checkpoints stored as deltas (processes with CHECKPOINT_DELTAS=1, ADR 0018). */
  readonly deltaCheckpoints: number
}

const terminalTags = new Set(["TaskCompleted", "TaskCancelled"])
const isTerminalEvent = (e: Envelope["event"]) =>
  terminalTags.has(e._tag) ||
  (e._tag === "TaskFailed" && e.decision === "failed") ||
  (e._tag === "TaskRecovered" && e.decision === "failed")

/** Reads the status hash and the history of every task (through the store, in parallel). */
export const readTasks = (orchestrator: Orchestrator, ids: ReadonlyArray<string>): Promise<ReadonlyArray<TaskReport>> =>
  orchestrator.runEffect(Effect.gen(function*() {
    const store = yield* TaskStore
    return yield* Effect.forEach(ids, (id) =>
      Effect.all({ state: store.getState(id), history: store.getHistory(id) }).pipe(Effect.map((r) => ({ id, ...r }))), {
      concurrency: 32
    })
  }))

/** Statuses of many tasks, one pipelined round trip per 1000. */
export const statuses = async (orchestrator: Orchestrator, ids: ReadonlyArray<string>): Promise<ReadonlyArray<string | null>> =>
  orchestrator.runEffect(Effect.gen(function*() {
    const store = yield* TaskStore
    return yield* Effect.forEach(ids, (id) => Effect.map(store.getStatus(id), (s) => s ?? null), { concurrency: 64 })
  }))

export const allTerminal = (s: ReadonlyArray<string | null>) =>
  s.every((x) => x === "completed" || x === "failed" || x === "cancelled")

const isDone = (x: string | null) => x === "completed" || x === "failed" || x === "cancelled"

/**
 * Waits until every task is terminal; on timeout, fails with what the stuck tasks look like
 * (status hash and history), which is what a "lost task" bug report needs.
 */
export const waitAllTerminal = async (orchestrator: Orchestrator, ids: ReadonlyArray<string>, ms: number) => {
  try {
    await waitFor(() => statuses(orchestrator, ids), allTerminal, ms, "all tasks terminal")
  } catch (e) {
    const s = await statuses(orchestrator, ids)
    const stuck = ids.filter((_, i) => !isDone(s[i]!))
    const reports = await readTasks(orchestrator, stuck.slice(0, 5))
    const detail = reports.map((r) =>
      `${r.id}: ${JSON.stringify(r.state)}\n  ${r.history.map((h) => `${h.event._tag}${"lease" in h.event ? `(${h.event.lease})` : ""}`).join(" ")}`
    )
    throw new Error(`${stuck.length} of ${ids.length} tasks not terminal after ${ms} ms:\n${detail.join("\n")}`, { cause: e })
  }
}

/** Checks every task: one terminal state, history folds to the hash, checkpoints in order, repeats bounded. */
export const verify = (reports: ReadonlyArray<TaskReport>): Verdict => {
  let completed = 0
  let failed = 0
  let cancelled = 0
  let recoveries = 0
  let claims = 0
  let repeatedTurns = 0
  let deltaCheckpoints = 0
  const lost: Array<string> = []
  const duplicates: Array<string> = []
  const foldMismatches: Array<string> = []
  const badCheckpoints: Array<string> = []
  const excessRepeats: Array<string> = []
  for (const { id, state, history } of reports) {
    const tags = history.map((e) => e.event._tag)
    const terminals = history.filter((e) => isTerminalEvent(e.event)).length
    const completions = tags.filter((t) => t === "TaskCompleted").length
    if (state === undefined || !["completed", "failed", "cancelled"].includes(state.status) || terminals === 0) lost.push(id)
    if (terminals > 1 || completions > 1) duplicates.push(id)
    if (state?.status === "completed") completed++
    if (state?.status === "failed") failed++
    if (state?.status === "cancelled") cancelled++
    if (!isDeepStrictEqual(fold(history), state)) foldMismatches.push(id)
    const checkpoints = history.flatMap((e) => e.event._tag === "TurnCompleted" ? [e.event.turn] : [])
    if (checkpoints.some((turn, i) => turn !== i + 1)) badCheckpoints.push(id)
    const taskClaims = tags.filter((t) => t === "TaskClaimed").length
    const lostLeases = tags.filter((t) => t === "TaskRecovered" || t === "TaskReleased" || t === "TaskFailed").length
    const turnsNeeded = checkpoints.length + (completions > 0 ? 1 : 0)
    const repeats = taskClaims - turnsNeeded
    // Every claim that did not end in a checkpoint or completion must be accounted for by a lost lease
    // (recovered), a hand-back (released) or a failed attempt: at most one turn repeated for each.
    if (repeats > lostLeases) excessRepeats.push(id)
    claims += taskClaims
    repeatedTurns += Math.max(0, repeats)
    recoveries += tags.filter((t) => t === "TaskRecovered").length
    deltaCheckpoints += history.filter((e) => "payloadDelta" in e.event && e.event.payloadDelta !== undefined).length
  }
  const wanting = new Set([...lost, ...duplicates, ...foldMismatches, ...badCheckpoints, ...excessRepeats])
  const details = new Map(reports.filter((r) => wanting.has(r.id)).slice(0, 5).map((r) => [
    r.id,
    `state ${JSON.stringify(r.state)}\n` +
    r.history.map((e) => `  v${e.version} ${e.id} ${JSON.stringify(e.event).slice(0, 200)}`).join("\n")
  ]))
  return {
    details,
    tasks: reports.length,
    completed,
    failed,
    cancelled,
    lost,
    duplicates,
    foldMismatches,
    badCheckpoints,
    excessRepeats,
    recoveries,
    claims,
    repeatedTurns,
    deltaCheckpoints
  }
}

/** A compact summary line for console.log. */
/** Every task completed exactly once: none lost, none finished twice, every history folding to its hash. */
export const expectAllCompletedOnce = (v: Verdict, tasks: number) => {
  // A failure names the tasks and shows the first few in full: these runs are hard to repeat.
  const details = [...v.details].map(([id, d]) => `${id}: ${d}`).join("\n")
  expect(v.lost, details).toEqual([])
  expect(v.duplicates, details).toEqual([])
  expect(v.completed).toBe(tasks)
  expect(v.foldMismatches, details).toEqual([])
  expect(v.badCheckpoints, details).toEqual([])
  expect(v.excessRepeats, details).toEqual([])
}

export const summary = (v: Verdict) =>
  `tasks=${v.tasks} completed=${v.completed} failed=${v.failed} cancelled=${v.cancelled} lost=${v.lost.length} ` +
  `duplicates=${v.duplicates.length} foldMismatches=${v.foldMismatches.length} claims=${v.claims} ` +
  `recoveries=${v.recoveries} repeatedTurns=${v.repeatedTurns} deltaCheckpoints=${v.deltaCheckpoints}`

/** Ends everything the file started: child processes, private servers; the caller deletes its namespaces. */
export const cleanupAll = async () => {
  await killAllWorkers()
  await disposeAllRedis()
}

export { Orchestrator }
