/**
 * The task-status projection as the audit tools compute it: `TaskDecider.evolve` folded over a history,
 * plus the two facts the status hash keeps beside the decider's state (when the task entered its status,
 * which is its status-index score, and when it was last claimed), the hash fields exactly as the Lua
 * scripts write them, a field-by-field comparison, and the one script (`lua/project.lua`) that writes a
 * folded projection back (import, `rebuild --fix`).
 *
 * Invariant: nothing here decides anything on its own. The state is always `evolve`'s; this module only
 * renders it in the storage layout of `streams/lua/*.lua`, so that `hashFieldsOf(fold(h))` read back by
 * `stateFromHash` equals `fold(h)`.
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { evolve, type State, type TaskState } from "../../projections/TaskDecider.ts"
import { INDEX_ANCHOR, type Keyspace, taskKeys } from "../../streams/Keys.ts"
import type { RedisConnection } from "../../streams/RedisClient.ts"
import { masters } from "../../streams/RedisClient.ts"
import { type Envelope, TaskStatus as TaskStatusSchema } from "../../streams/TaskEvent.ts"
import type { TaskStatus } from "../../streams/TaskEvent.ts"

/** Every status, including `expired` (which has no index entries: an expired task's hash is gone). */
export const allStatuses: ReadonlyArray<TaskStatus> = TaskStatusSchema.literals

/** The statuses whose tasks are kept in a status index (`{ns:p}:idx:<status>`). */
export const indexedStatuses: ReadonlyArray<TaskStatus> = allStatuses.filter((s) => s !== "expired")

export interface Projection {
  readonly state: State
  /** History entries folded (the history's length when the fold read all of it). */
  readonly length: number
  /** When the task entered its current status: its score in the status index. */
  readonly statusSince: number
  /** The time of the last claim, the best stand-in for the last heartbeat (histories do not record those). */
  readonly lastClaimAt: number | undefined
  /** The history index of the event that holds the current payload, whole or as a delta. */
  readonly payloadAt: number | undefined
  /** While the payload is a chain of deltas (ADR 0018): the index of the whole payload it starts from. */
  readonly payloadFrom: number | undefined
  /** The history index of the event that holds the output (the hash's `outputAt`). */
  readonly outputAt: number | undefined
}

export const emptyProjection: Projection = {
  state: undefined,
  length: 0,
  statusSince: 0,
  lastClaimAt: undefined,
  payloadAt: undefined,
  payloadFrom: undefined,
  outputAt: undefined
}

/** The hash's `payloadAt`: the entry holding the payload, or its chain "<from>-<to>" (lib.lua's checkpoint_at). */
export const payloadPointer = (p: Pick<Projection, "payloadAt" | "payloadFrom">): string | undefined =>
  p.payloadAt === undefined ? undefined : p.payloadFrom === undefined ? String(p.payloadAt) : `${p.payloadFrom}-${p.payloadAt}`

/** The history range a `payloadAt` value names (one entry: from = to). */
export const parsePayloadPointer = (pointer: string): { readonly from: number; readonly to: number } => {
  const dash = pointer.indexOf("-")
  return dash < 0
    ? { from: Number(pointer), to: Number(pointer) }
    : { from: Number(pointer.slice(0, dash)), to: Number(pointer.slice(dash + 1)) }
}

/**
 * Events after which a task keeps its status and its index score: the scripts that write them do not
 * call `set_status` (steer, cancel of a running task, heartbeat, spawn). The others call it exactly when
 * the status changes (a result or timeout that leaves the task waiting does not).
 */
const keepsStatus: ReadonlySet<string> = new Set(["TaskSteered", "TaskCancelRequested", "TaskHeartbeat", "ChildTasksSpawned"])

type Folded = Pick<Envelope, "at" | "taskId" | "agent" | "ownerId" | "event">

/** Folds one more event. */
export const project = (p: Projection, envelope: Folded): Projection => {
  const tag = envelope.event._tag
  if (tag === "TaskHeartbeat") return { ...p, length: p.length + 1 }
  const state = evolve(p.state, envelope)
  const same = p.state !== undefined && state?.status === p.state.status
  const event = envelope.event as { readonly payload?: unknown; readonly payloadDelta?: unknown }
  const checkpoints = event.payloadDelta !== undefined || ("payload" in event && event.payload !== undefined)
  return {
    state,
    length: p.length + 1,
    statusSince: keepsStatus.has(tag) || same ? p.statusSince : envelope.at,
    lastClaimAt: tag === "TaskClaimed" ? envelope.at : p.lastClaimAt,
    // The events that set the payload or the output carry it (and the scripts point the hash at them); a delta
    // extends the chain from the last whole payload.
    payloadAt: checkpoints ? p.length : p.payloadAt,
    payloadFrom: event.payloadDelta !== undefined ? p.payloadFrom ?? p.payloadAt : checkpoints ? undefined : p.payloadFrom,
    outputAt: tag === "TaskCompleted" ? p.length : p.outputAt
  }
}

export const projectAll = (history: Iterable<Folded>, from: Projection = emptyProjection): Projection => {
  let p = from
  for (const e of history) p = project(p, e)
  return p
}

const json = (value: unknown): string => JSON.stringify(value ?? null)

/**
 * The status hash of a projection's state, field by field, as the scripts leave it (`enqueue.lua` writes the
 * initial fields; `cancel` stays "1" once a cancel was requested; `hb` is the last claim or heartbeat time;
 * `payloadAt` / `outputAt` point at the history entries holding the payload and output).
 */
export const hashFieldsOf = (p: Projection & { readonly state: TaskState }): ReadonlyArray<readonly [string, string]> => {
  const s = p.state
  const fields: Array<readonly [string, string]> = [
    ["agent", s.agent],
    ["ownerId", s.ownerId],
    ["status", s.status],
    ["lease", String(s.lease)],
    ["retries", String(s.retries)],
    ["maxRetries", String(s.maxRetries)],
    ["turns", String(s.turns)],
    ["cancel", s.cancelRequested ? "1" : "0"],
    ["createdAt", String(s.createdAt)],
    ["version", String(s.version)],
    ["updatedAt", String(s.updatedAt)]
  ]
  const payloadAt = payloadPointer(p)
  if (payloadAt !== undefined) fields.push(["payloadAt", payloadAt])
  if (p.outputAt !== undefined) fields.push(["outputAt", String(p.outputAt)])
  if (s.error !== undefined) fields.push(["error", json(s.error)])
  if (s.worker !== undefined) fields.push(["worker", s.worker])
  if (s.retryAt !== undefined) fields.push(["retryAt", String(s.retryAt)])
  if (s.parentId !== undefined) fields.push(["parent", s.parentId])
  if (s.batchId !== undefined) fields.push(["batch", s.batchId])
  if (s.deadline !== undefined) fields.push(["deadline", String(s.deadline)])
  if (p.lastClaimAt !== undefined) fields.push(["hb", String(p.lastClaimAt)])
  return fields
}

/** What the task keeps beside its hash (`wait`, `results`, `children` keys), as the scripts store it. */
export const sideFieldsOf = (s: TaskState) => ({
  wait: s.wait.map((item) => JSON.stringify(item)),
  results: Object.entries(s.results).map(([id, r]) => [id, JSON.stringify(r)] as const),
  children: Object.entries(s.children).map(([id, c]) => [id, JSON.stringify(c)] as const)
})

/** One field whose stored value is not the folded one. */
export interface Divergence {
  /** A `TaskState` field, or `hash` (present/missing), `index`, `delayed`, `history`. */
  readonly field: string
  readonly live: unknown
  readonly expected: unknown
}

/** JSON with sorted object keys: equal values give equal text whatever the key order. */
export const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v) ?? "undefined"

const stateFields: ReadonlyArray<keyof TaskState> = [
  "taskId",
  "agent",
  "ownerId",
  "status",
  "payload",
  "output",
  "error",
  "lease",
  "worker",
  "retries",
  "maxRetries",
  "turns",
  "cancelRequested",
  "steering",
  "retryAt",
  "createdAt",
  "updatedAt",
  "version",
  "parentId",
  "batchId",
  "children",
  "wait",
  "results",
  "deadline"
]

/**
 * Every field where the live state differs from the folded one. An expired task has no hash: its live
 * state is `undefined`, which agrees with a fold that ends in `expired`.
 */
export const compareStates = (live: TaskState | undefined, expected: State): ReadonlyArray<Divergence> => {
  if (expected === undefined) {
    return live === undefined ? [] : [{ field: "history", live: "hash present", expected: "no history" }]
  }
  if (live === undefined) {
    return expected.status === "expired" ? [] : [{ field: "hash", live: "missing", expected: expected.status }]
  }
  if (expected.status === "expired") return [{ field: "hash", live: live.status, expected: "deleted (expired)" }]
  const out: Array<Divergence> = []
  for (const field of stateFields) {
    const a = live[field]
    const b = expected[field]
    if (canonical(a) !== canonical(b)) out.push({ field, live: a, expected: b })
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// The projection-writing script

const lua = readFileSync(fileURLToPath(new URL("./lua/project.lua", import.meta.url)), "utf8")
  .replace("@INDEX_ANCHOR@", INDEX_ANCHOR)
const COMMAND = "fxaudit_project"
const defined = new WeakSet<object>()

type ProjectCaller = (...args: ReadonlyArray<string | number>) => unknown
export type ProjectingConnection = RedisConnection & { readonly [COMMAND]: ProjectCaller }

/** The connection with the projection script defined on it (once per connection). */
export const withProjectScript = (conn: RedisConnection): ProjectingConnection => {
  if (!defined.has(conn)) {
    conn.defineCommand(COMMAND, { numberOfKeys: 3, lua })
    defined.add(conn)
  }
  return conn as ProjectingConnection
}

/**
 * The connection with the projection script defined, and compiled on every master (SCRIPT LOAD), so
 * that pipelined calls on any partition find it instead of each falling back to EVAL.
 */
export const loadProjectScript = async (conn: RedisConnection): Promise<ProjectingConnection> => {
  const defined = withProjectScript(conn)
  await Promise.all(masters(conn).map((node) => node.script("LOAD", lua)))
  return defined
}

export type ProjectMode = "import" | "fix"

/** The arguments of one projection write (keys first). `entries` are written only in "import" mode. */
export const projectArgs = (
  ks: Keyspace,
  taskId: string,
  mode: ProjectMode,
  p: Projection,
  entries: ReadonlyArray<string> = []
): ReadonlyArray<string | number> => {
  const k = taskKeys(ks, taskId)
  const s = p.state
  const live = s !== undefined && s.status !== "expired"
  const fields = live ? hashFieldsOf({ ...p, state: s }) : []
  const steering = live ? s.steering.map(json) : []
  const side = live ? sideFieldsOf(s) : { wait: [], results: [], children: [] }
  return [
    k.task,
    k.log,
    k.steering,
    k.prefix,
    taskId,
    mode,
    p.length,
    s?.status ?? "expired",
    p.statusSince,
    s?.retryAt ?? "",
    s?.agent ?? "",
    fields.length,
    ...fields.flat(),
    steering.length,
    ...steering,
    side.wait.length,
    ...side.wait,
    side.results.length,
    ...side.results.flat(),
    side.children.length,
    ...side.children.flat(),
    live ? s.deadline ?? "" : "",
    ...(mode === "import" ? entries : [])
  ]
}

export type ProjectReply = { readonly _tag: "ok" } | { readonly _tag: "exists" | "raced"; readonly length: number }

export const parseProjectReply = (raw: unknown): ProjectReply => {
  const r = raw as ReadonlyArray<unknown>
  if (r[0] === "ok") return { _tag: "ok" }
  return { _tag: r[1] === "exists" ? "exists" : "raced", length: Number(r[2]) }
}

/** Adds one projection write to a pipeline (or sends it on a connection). */
export const callProject = (
  target: { [COMMAND]?: ProjectCaller } | object,
  args: ReadonlyArray<string | number>
): unknown => (target as Record<typeof COMMAND, ProjectCaller>)[COMMAND](...args)
