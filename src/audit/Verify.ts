/**
 * Verification and rebuild of the task-status projection: the live status hash (read as
 * `TaskStore.getState` reads it), its status index entry and its delayed-set entry are compared with the
 * fold of the task's history, field by field.
 *
 * Invariant: a comparison never races a live task. The hash, steering list, index scores and the
 * history's length are read in one MULTI, and only that many history entries are folded (a history is
 * append-only, so those entries cannot change). `rebuild --fix` writes a projection only if the history
 * still has that length (`lua/project.lua`, mode "fix").
 *
 * `verifyAll` finds tasks through the status indexes (ZSCAN, every status, every partition: no KEYS);
 * `rebuildProjections` finds them through their histories (SCAN MATCH `{ns:p}:task:*:log` TYPE list,
 * O(keys in the database)), because the histories are the source of truth when indexes are wrong.
 */
import { Effect, Option, Stream } from "effect"
import { allPartitions, INDEX_ANCHOR, partitionKeys, partitionPrefix, taskKeys } from "../../streams/Keys.ts"
import type { Redis } from "ioredis"
import { RedisClient, type RedisConnection } from "../../streams/RedisClient.ts"
import { type CorruptEntry, type RedisError, toRedisError } from "../../streams/StreamError.ts"
import type { TaskStatus } from "../../streams/TaskEvent.ts"
import type { InvalidInput } from "../Errors.ts"
import { TaskNotFound } from "../Errors.ts"
import { validTaskId } from "../TaskClient.ts"
import { stateFromHash, TaskStore } from "../TaskStore.ts"
import { historyPages } from "./History.ts"
import { masters } from "../../streams/RedisClient.ts"
import {
  allStatuses,
  callProject,
  compareStates,
  type Divergence,
  emptyProjection,
  loadProjectScript,
  parsePayloadPointer,
  payloadPointer,
  parseProjectReply,
  project,
  projectArgs,
  type Projection,
  withProjectScript
} from "./Projection.ts"

export interface VerifyResult {
  readonly taskId: string
  readonly ok: boolean
  /** Entries of the history that were folded. */
  readonly historyLength: number
  /** The status in the hash (undefined: no hash). */
  readonly liveStatus: TaskStatus | undefined
  /** The status the history folds to (undefined: no history). */
  readonly expectedStatus: TaskStatus | undefined
  readonly divergences: ReadonlyArray<Divergence>
}

interface Snapshot {
  readonly hash: Record<string, string>
  readonly steering: ReadonlyArray<string>
  readonly wait: ReadonlyArray<string>
  readonly results: Record<string, string>
  readonly children: Record<string, string>
  /** Score in the deadline set (null: not a member). */
  readonly deadline: string | null
  readonly length: number
  /** Score of the task in each status index (null: not a member). */
  readonly scores: Readonly<Record<string, string | null>>
  readonly delayed: string | null
}

/** The live side of a task, read atomically. */
const snapshot = (taskId: string) =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const k = taskKeys(store.keyspace, taskId)
    const replies = yield* redis.use("verify snapshot", async (c) => {
      const m = c.multi().hgetall(k.task).lrange(k.steering, 0, -1).llen(k.log)
      for (const s of allStatuses) m.zscore(k.index(s), taskId)
      m.zscore(k.delayed, taskId)
      m.lrange(k.wait, 0, -1).hgetall(k.results).hgetall(k.children).zscore(k.waits, taskId)
      const out = await m.exec()
      if (out === null) throw new Error("verify snapshot: transaction aborted")
      return out.map(([err, value]) => {
        if (err) throw err
        return value
      })
    })
    const scores: Record<string, string | null> = {}
    allStatuses.forEach((s, i) => (scores[s] = replies[3 + i] as string | null))
    const side = 4 + allStatuses.length
    return {
      hash: replies[0] as Record<string, string>,
      steering: replies[1] as ReadonlyArray<string>,
      length: Number(replies[2]),
      scores,
      delayed: replies[3 + allStatuses.length] as string | null,
      wait: replies[side] as ReadonlyArray<string>,
      results: replies[side + 1] as Record<string, string>,
      children: replies[side + 2] as Record<string, string>,
      deadline: replies[side + 3] as string | null
    } satisfies Snapshot
  })

/**
 * The fold of the first `length` entries, or the first problem found in them; with the entries at the
 * positions `keep` says (the hash's pointers), as stored JSON, so their payload and output need no second read.
 */
const foldPrefix = (taskId: string, length: number, keep: (index: number) => boolean) =>
  historyPages(taskId, { to: length }).pipe(
    Stream.runFold(
      () => ({ p: emptyProjection, problem: undefined as Divergence | undefined, kept: new Map<number, string>() }),
      (acc, page) => {
        let { p, problem } = acc
        for (const e of page) {
          if (keep(p.length)) acc.kept.set(p.length, JSON.stringify(e))
          if (problem === undefined && e.version !== p.length + 1 && e.event._tag !== "TaskHeartbeat") {
            problem = { field: "history", live: `entry ${p.length} has version ${e.version}`, expected: p.length + 1 }
          }
          if (problem === undefined && e.taskId !== taskId) {
            problem = { field: "history", live: `entry ${p.length} belongs to ${e.taskId}`, expected: taskId }
          }
          p = project(p, e)
        }
        return { p, problem, kept: acc.kept }
      }
    ),
    Effect.catchTag("CorruptEntry", (e: CorruptEntry) =>
      Effect.succeed({
        kept: new Map<number, string>(),
        p: emptyProjection,
        problem: { field: "history", live: `corrupt entry: ${e.message.slice(0, 200)}`, expected: "decodable envelopes" }
      }))
  )

/** The hash's pointers into the history must name the entries the fold says hold the payload and output. */
const pointerDivergences = (hash: Record<string, string>, p: Projection): ReadonlyArray<Divergence> =>
  (["payloadAt", "outputAt"] as const).flatMap((field) => {
    const live = hash[field]
    const expected = field === "payloadAt" ? payloadPointer(p) : p.outputAt === undefined ? undefined : String(p.outputAt)
    return live === expected || p.state?.status === "expired" ? [] : [{ field, live, expected }]
  })

const indexDivergences = (snap: Snapshot, p: Projection): ReadonlyArray<Divergence> => {
  const state = p.state
  if (state === undefined) return []
  const out: Array<Divergence> = []
  for (const s of allStatuses) {
    const score = snap.scores[s] ?? null
    if (s === state.status && s !== "expired") {
      if (score === null) out.push({ field: "index", live: `not in idx:${s}`, expected: `idx:${s} @ ${p.statusSince}` })
      else if (Number(score) !== p.statusSince) {
        out.push({ field: "index", live: `idx:${s} @ ${score}`, expected: `idx:${s} @ ${p.statusSince}` })
      }
    } else if (score !== null) {
      out.push({ field: "index", live: `in idx:${s}`, expected: "absent" })
    }
  }
  if (state.status === "backoff" && (snap.delayed === null || Number(snap.delayed) !== state.retryAt)) {
    out.push({ field: "delayed", live: snap.delayed, expected: state.retryAt })
  }
  const deadline = snap.deadline === null ? undefined : Number(snap.deadline)
  if (deadline !== (state.status === "expired" ? undefined : state.deadline)) {
    out.push({ field: "waits", live: snap.deadline, expected: state.deadline ?? "absent" })
  }
  return out
}

/**
 * A task with side data (steering, wait, results, children) must carry the `sideKeys` mark in its hash: the
 * scripts read side keys only of marked tasks (streams/lua/lib.lua's mark_side), so unmarked data is unseen.
 */
const sideMarkDivergences = (snap: Snapshot): ReadonlyArray<Divergence> => {
  const hasSide = snap.steering.length > 0 || snap.wait.length > 0 || Object.keys(snap.results).length > 0 ||
    Object.keys(snap.children).length > 0
  return hasSide && snap.hash.sideKeys !== "1" ? [{ field: "sideKeys", live: snap.hash.sideKeys ?? null, expected: "1" }] : []
}

/** Verifies one task; also returns the fold, for `rebuild --fix`. */
const inspect = (taskId: string) =>
  Effect.gen(function*() {
    const snap = yield* snapshot(taskId)
    const present = Object.keys(snap.hash).length > 0
    if (!present && snap.length === 0) {
      const indexed = allStatuses.filter((s) => snap.scores[s] !== null)
      if (indexed.length === 0) return yield* new TaskNotFound({ taskId })
    }
    const payload = snap.hash.payloadAt === undefined ? undefined : parsePayloadPointer(snap.hash.payloadAt)
    const outputAt = snap.hash.outputAt === undefined ? undefined : Number(snap.hash.outputAt)
    const { p, problem, kept } = yield* foldPrefix(
      taskId,
      snap.length,
      (i) => i === outputAt || (payload !== undefined && i >= payload.from && i <= payload.to)
    )
    const entryAt = (i: number | undefined) => i === undefined ? null : kept.get(i) ?? null
    // The payload's entry, or its chain's (one entry: a whole payload). Entries a wrong pointer names past the
    // history are left out: the payload then differs from the fold's, and the pointer is reported.
    const payloadEntry = payload === undefined
      ? null
      : payload.from === payload.to
      ? entryAt(payload.to)
      : Array.from({ length: payload.to - payload.from + 1 }, (_, i) => payload.from + i).flatMap((i) => entryAt(i) ?? [])
    const live = present ? stateFromHash(taskId, snap.hash, { ...snap, payloadEntry, outputEntry: entryAt(outputAt) }) : undefined
    const divergences = [
      ...(problem !== undefined ? [problem] : []),
      ...(problem === undefined ? compareStates(live, p.state) : []),
      ...(problem === undefined && present ? pointerDivergences(snap.hash, p) : []),
      ...(problem === undefined ? indexDivergences(snap, p) : []),
      ...(present ? sideMarkDivergences(snap) : []),
      ...(p.state === undefined
        ? allStatuses.filter((s) => snap.scores[s] !== null).map((s): Divergence => ({
          field: "index",
          live: `in idx:${s}`,
          expected: "absent (no history)"
        }))
        : [])
    ]
    const result: VerifyResult = {
      taskId,
      ok: divergences.length === 0,
      historyLength: snap.length,
      liveStatus: present ? snap.hash.status as TaskStatus : undefined,
      expectedStatus: p.state?.status,
      divergences
    }
    return { result, projection: problem === undefined ? p : undefined, snapshot: snap }
  })

/**
 * Compares a task's live status hash, index and delayed entries with the fold of its history and
 * reports every divergent field. Fails with `TaskNotFound` when there is neither hash, history nor index
 * entry.
 */
export const verifyTask = (
  taskId: string
): Effect.Effect<VerifyResult, InvalidInput | TaskNotFound | RedisError, TaskStore | RedisClient> =>
  Effect.flatMap(validTaskId(taskId), (id) => Effect.map(inspect(id), (r) => r.result))

export interface VerifyProgress {
  readonly checked: number
  readonly divergent: number
  readonly partition: number
  readonly status: TaskStatus | "history"
}

export interface VerifyAllOptions {
  readonly onProgress?: (progress: VerifyProgress) => void
  /** Called for every divergent task as it is found. */
  readonly onDivergence?: (result: VerifyResult) => void
  /** Tasks verified at once (default 16). */
  readonly concurrency?: number
  /** ZSCAN / SCAN COUNT hint (default 500). */
  readonly scanCount?: number
  /** Divergent results kept in the report (default 1000; the count is always exact). */
  readonly maxReported?: number
}

export interface VerifyAllReport {
  readonly checked: number
  readonly divergent: number
  /** The first `maxReported` divergent tasks. */
  readonly results: ReadonlyArray<VerifyResult>
}

/** Task ids in a status index, by ZSCAN (one present throughout is seen at least once); not its anchor. */
const indexMembers = (key: string, count: number) =>
  Stream.unwrap(Effect.gen(function*() {
    const redis = yield* RedisClient
    return Stream.paginate({ cursor: "0", started: false }, (cur: { cursor: string; started: boolean }) =>
      cur.started && cur.cursor === "0"
        ? Effect.succeed([[], Option.none()] as const)
        : Effect.map(
          redis.use("zscan", (c) => c.zscan(key, cur.cursor, "COUNT", count)),
          ([next, flat]) =>
            [
              flat.filter((m, i) => i % 2 === 0 && m !== INDEX_ANCHOR),
              next === "0" ? Option.none() : Option.some({ cursor: next, started: true })
            ] as const
        ))
  }))

/** The servers a SCAN must visit: every master of a Cluster, or the one server. */
export const scanTargets: (conn: RedisConnection) => ReadonlyArray<Redis> = masters

/**
 * Keys matching a pattern, of one type (or any), by SCAN on every master: O(keys in the database).
 * A key present throughout is returned at least once.
 */
export const scanKeys = (pattern: string, type: "list" | "hash" | undefined, count: number) =>
  Stream.unwrap(Effect.gen(function*() {
    const redis = yield* RedisClient
    const targets = scanTargets(redis.conn)
    return Stream.paginate({ node: 0, cursor: "0" }, (cur: { node: number; cursor: string }) =>
      Effect.map(
        redis.use("scan", () => {
          const node = targets[cur.node]!
          return type === undefined
            ? node.scan(cur.cursor, "MATCH", pattern, "COUNT", count)
            : node.scan(cur.cursor, "MATCH", pattern, "COUNT", count, "TYPE", type)
        }),
        ([next, keys]) => {
          const following = next !== "0"
            ? Option.some({ node: cur.node, cursor: next })
            : cur.node + 1 < targets.length
            ? Option.some({ node: cur.node + 1, cursor: "0" })
            : Option.none()
          return [keys, following] as const
        }
      ))
  }))

const notFoundResult = (taskId: string): VerifyResult => ({
  taskId,
  ok: false,
  historyLength: 0,
  liveStatus: undefined,
  expectedStatus: undefined,
  divergences: [{ field: "index", live: "index entry", expected: "no task (no hash, no history)" }]
})

/**
 * Verifies every task found in the status indexes of every partition. Bounded memory: one ZSCAN page
 * and `concurrency` tasks at a time, plus up to `maxReported` divergent results. A task that moves
 * between indexes during the pass may be checked twice or not at all.
 */
export const verifyAll = (
  options: VerifyAllOptions = {}
): Effect.Effect<VerifyAllReport, RedisError, TaskStore | RedisClient> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const ks = store.keyspace
    const maxReported = options.maxReported ?? 1000
    let checked = 0
    let divergent = 0
    const results: Array<VerifyResult> = []
    for (const partition of allPartitions(ks)) {
      // `expired` has no index; scanning it anyway reports a stray entry if one was ever written.
      for (const status of allStatuses) {
        yield* indexMembers(partitionKeys(ks, partition).index(status), options.scanCount ?? 500).pipe(
          Stream.mapEffect(
            (taskId) =>
              inspect(taskId).pipe(
                Effect.map((r) => r.result),
                Effect.catchTag("TaskNotFound", () => Effect.succeed(notFoundResult(taskId)))
              ),
            { concurrency: options.concurrency ?? 16 }
          ),
          Stream.runForEach((r) =>
            Effect.sync(() => {
              checked++
              if (!r.ok) {
                divergent++
                if (results.length < maxReported) results.push(r)
                options.onDivergence?.(r)
              }
              options.onProgress?.({ checked, divergent, partition, status })
            })
          )
        )
      }
    }
    return { checked, divergent, results }
  }).pipe(Effect.catchTag("InvalidInput", (e) => Effect.die(e)))

export interface RebuildOptions extends VerifyAllOptions {
  /** Write the folded projection of every divergent task (default false: report only). */
  readonly fix?: boolean
}

export interface RebuildReport extends VerifyAllReport {
  /** Divergent tasks whose projection was rewritten. */
  readonly fixed: number
  /** Divergent tasks that changed while being fixed, twice in a row (left as they are). */
  readonly raced: number
}

/**
 * Recomputes every task's status projection from its history (found by SCAN over the history keys),
 * compares it with the live one, and with `fix` writes the folded projection of each divergent task.
 */
export const rebuildProjections = (
  options: RebuildOptions = {}
): Effect.Effect<RebuildReport, RedisError, TaskStore | RedisClient> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    const conn = options.fix === true ? yield* redis.use("script load", loadProjectScript) : withProjectScript(redis.conn)
    const maxReported = options.maxReported ?? 1000
    let checked = 0
    let divergent = 0
    let fixed = 0
    let raced = 0
    const results: Array<VerifyResult> = []

    const fixOne = (taskId: string, attempt: number): Effect.Effect<"fixed" | "raced" | "unfixable", RedisError> =>
      Effect.gen(function*() {
        const inspected = yield* inspect(taskId).pipe(
          Effect.provideService(TaskStore, store),
          Effect.provideService(RedisClient, redis),
          Effect.catchTag("TaskNotFound", () => Effect.succeed(undefined)),
          Effect.catchTag("InvalidInput", (e) => Effect.die(e))
        )
        if (inspected === undefined) return "unfixable"
        const { result, projection, snapshot: snap } = inspected
        if (result.ok) return "fixed"
        if (projection === undefined || projection.state === undefined) return "unfixable"
        const reply = parseProjectReply(
          yield* Effect.tryPromise({
            try: () => callProject(conn, projectArgs(ks, taskId, "fix", { ...projection, length: snap.length })) as Promise<unknown>,
            catch: (e) => toRedisError("rebuild fix", e)
          })
        )
        if (reply._tag === "ok") return "fixed"
        return attempt < 2 ? yield* fixOne(taskId, attempt + 1) : "raced"
      })

    for (const partition of allPartitions(ks)) {
      const prefix = partitionPrefix(ks, partition)
      const head = `${prefix}:task:`
      yield* scanKeys(`${head}*:log`, "list", options.scanCount ?? 500).pipe(
        Stream.map((key) => key.slice(head.length, -":log".length)),
        Stream.mapEffect(
          (taskId) =>
            Effect.gen(function*() {
              const { result } = yield* inspect(taskId)
              if (result.ok || options.fix !== true) return { result, outcome: "none" as const }
              return { result, outcome: yield* fixOne(taskId, 1) }
            }).pipe(Effect.catchTag("TaskNotFound", () => Effect.succeed(undefined))),
          { concurrency: options.concurrency ?? 16 }
        ),
        Stream.runForEach((r) =>
          Effect.sync(() => {
            if (r === undefined) return // the history expired between SCAN and read
            checked++
            if (!r.result.ok) {
              divergent++
              if (r.outcome === "fixed") fixed++
              if (r.outcome === "raced") raced++
              if (results.length < maxReported) results.push(r.result)
              options.onDivergence?.(r.result)
            }
            options.onProgress?.({ checked, divergent, partition, status: "history" })
          })
        )
      )
    }
    return { checked, divergent, results, fixed, raced }
  }).pipe(Effect.catchTag("InvalidInput", (e) => Effect.die(e)))

