/**
 * Export and import of task histories as JSON Lines: one task per line,
 * `{"taskId","agent","ownerId","events":[envelope, ...]}`, the envelopes exactly as stored.
 *
 * Which tasks an export takes: those that entered their current status in `[since, until)`: a finished
 * task when it finished, a live task at its last status change, an expired task when it expired. They are
 * found without scanning the key space: the status indexes (`{ns:p}:idx:<status>`, scored by exactly that
 * time) give every task that still has its hash; expired tasks have none, so they are found as
 * `TaskExpired` entries of the partition logs (`{ns:p}:events`) as long as the log still covers the
 * window, else by the fallback SCAN MATCH `{ns:p}:task:*:log` TYPE list, which is O(keys in the database).
 *
 * Invariants: bounded memory. Tasks are fetched `batchSize` at a time (their first history page in one
 * pipelined round trip) and a long history is written page by page, so at most
 * `batchSize × pageSize` history entries are held, whatever the number of tasks or the length of one
 * history. Import writes into an empty namespace only, each task's history and its folded projection
 * in one script call (`lua/project.lua`), so an imported namespace verifies clean.
 */
import { Effect, Option, Schema, Stream } from "effect"
import {
  allPartitions,
  type Keyspace,
  namespaceKeys,
  partitionKeys,
  partitionOf,
  partitionPrefix,
  taskKeys
} from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { type CorruptEntry, type RedisError, toRedisError } from "../../streams/StreamError.ts"
import { AgentName, decodeHistory, Envelope, namedHistoryEntry, TaskId, type TaskStatus } from "../../streams/TaskEvent.ts"
import { InvalidInput } from "../Errors.ts"
import { TaskStore } from "../TaskStore.ts"
import {
  allStatuses,
  callProject,
  indexedStatuses,
  loadProjectScript,
  parseProjectReply,
  projectAll,
  projectArgs
} from "./Projection.ts"
import { perPartition } from "./Pipelines.ts"
import { scanKeys } from "./Verify.ts"

/** One task of an export. */
export interface HistoryRecord {
  readonly taskId: string
  readonly agent: string
  readonly ownerId: string
  readonly events: ReadonlyArray<Envelope>
}

/** Where an export found a task. */
export type ExportSource = "index" | "log" | "scan"

export interface ExportOptions {
  /** Window start, ms since the epoch, inclusive (default 0). */
  readonly since?: number
  /** Window end, ms since the epoch, exclusive (default: now). */
  readonly until?: number
  /** Only tasks of this agent. */
  readonly agent?: string
  /**
   * Only tasks whose current status is one of these (default: all). `["expired"]` with consecutive
   * windows archives every task exactly once, at the end of its life.
   */
  readonly statuses?: ReadonlyArray<TaskStatus>
  /** History entries per LRANGE (default 100). */
  readonly pageSize?: number
  /** Tasks whose first history page is read in one pipelined round trip (default 32). */
  readonly batchSize?: number
  /**
   * How expired tasks (which have left the status indexes) are found: `log` reads the partition logs'
   * `TaskExpired` entries in the window; `scan` scans the history keys (O(keys)); `auto` (default) reads
   * the log of a partition when it still covers the window (nothing in it was trimmed at or after
   * `since`), and scans otherwise.
   */
  readonly expiredSource?: "auto" | "log" | "scan"
  /** Called after each exported task. */
  readonly onProgress?: (progress: ExportProgress) => void
}

export interface ExportProgress {
  readonly tasks: number
  readonly events: number
  readonly partition: number
  readonly source: ExportSource
}

interface Candidate {
  readonly taskId: string
  readonly partition: number
  readonly source: ExportSource
}

interface Window {
  readonly since: number
  readonly until: number
  readonly agent: string | undefined
  readonly statuses: ReadonlyArray<TaskStatus>
  readonly pageSize: number
  readonly batchSize: number
  readonly expiredSource: "auto" | "log" | "scan"
}

const intIn = (name: string, value: number | undefined, fallback: number, min: number, max: number) =>
  value === undefined
    ? Effect.succeed(fallback)
    : Number.isInteger(value) && value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(new InvalidInput({ message: `${name} must be an integer from ${min} to ${max}, got ${value}` }))

const windowOf = (options: ExportOptions) =>
  Effect.gen(function*() {
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    const since = options.since ?? 0
    const until = options.until ?? now + 1
    if (!Number.isFinite(since) || !Number.isFinite(until) || since < 0 || until < since) {
      return yield* new InvalidInput({ message: `invalid window: since ${since}, until ${until}` })
    }
    const statuses = options.statuses ?? allStatuses
    const unknown = statuses.filter((st) => !allStatuses.includes(st))
    if (unknown.length > 0 || statuses.length === 0) {
      return yield* new InvalidInput({ message: `statuses must be some of ${allStatuses.join(", ")}, got ${statuses.join(", ")}` })
    }
    if (options.agent !== undefined) {
      yield* Schema.decodeUnknownEffect(AgentName)(options.agent).pipe(
        Effect.mapError((e) => new InvalidInput({ message: `invalid agent: ${e.message}` }))
      )
    }
    return {
      since: Math.floor(since),
      until: Math.ceil(until),
      agent: options.agent,
      statuses,
      pageSize: yield* intIn("pageSize", options.pageSize, 100, 1, 10_000),
      batchSize: yield* intIn("batchSize", options.batchSize, 32, 1, 1_000),
      expiredSource: options.expiredSource ?? "auto"
    } satisfies Window
  })

/** Task ids in one status index with a score in the window, by keyset paging (score, then id). */
const indexCandidates = (w: Window, key: string, partition: number) =>
  Stream.unwrap(Effect.gen(function*() {
    const redis = yield* RedisClient
    return Stream.paginate({ score: w.since, skip: 0 }, (cur: { score: number; skip: number }) =>
      Effect.map(
        redis.use("zrangebyscore", (c) =>
          c.zrangebyscore(key, cur.score, `(${w.until}`, "WITHSCORES", "LIMIT", cur.skip, w.pageSize)),
        (flat) => {
          const ids: Array<Candidate> = []
          let last = cur.score
          let sameScore = cur.skip
          for (let i = 0; i + 1 < flat.length; i += 2) {
            const score = Number(flat[i + 1])
            sameScore = score === last ? sameScore + 1 : 1
            last = score
            ids.push({ taskId: flat[i]!, partition, source: "index" })
          }
          return [
            ids,
            ids.length < w.pageSize ? Option.none() : Option.some({ score: last, skip: sameScore })
          ] as const
        }
      ))
  }))

/**
 * Partition-log ids are the server's clock, `at` is the writer's: the log is read this much wider than
 * the window, and entries are then selected by their `at`.
 */
const clockSkewMs = 60_000

/** Whether the partition log still holds every entry from `since` (less the skew margin) on. */
const logCovers = (w: Window, events: string) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    const info = yield* redis.use("xinfo", (c) => c.xinfo("STREAM", events) as Promise<Array<unknown>>).pipe(
      Effect.catchTag("RedisError", () => Effect.succeed(undefined))
    )
    if (info === undefined) return false // no log: nothing to read expirations from
    const i = info.indexOf("max-deleted-entry-id")
    if (i < 0) return false // Redis before 7.0 does not say what was trimmed
    const deleted = String(info[i + 1])
    return deleted === "0-0" || Number(deleted.split("-")[0]) < w.since - clockSkewMs
  })

/** Tasks whose `TaskExpired` entry in the partition log lies in the window. */
const logExpiredCandidates = (w: Window, events: string, partition: number) =>
  Stream.unwrap(Effect.gen(function*() {
    const redis = yield* RedisClient
    const end = `${w.until + clockSkewMs}-18446744073709551615`
    return Stream.paginate(`${Math.max(0, w.since - clockSkewMs)}-0`, (start: string) =>
      w.until <= w.since
        ? Effect.succeed([[], Option.none<string>()] as const)
        : Effect.map(
          redis.use("xrange", (c) => c.xrange(events, start, end, "COUNT", w.pageSize)),
          (entries) => {
            const ids: Array<Candidate> = []
            for (const [, fields] of entries) {
              const raw = fields[1]
              if (raw === undefined || !raw.includes(`"_tag":"TaskExpired"`)) continue
              const { taskId, at } = JSON.parse(raw) as { taskId?: unknown; at?: unknown }
              if (typeof taskId === "string" && typeof at === "number" && at >= w.since && at < w.until) {
                ids.push({ taskId, partition, source: "log" })
              }
            }
            const last = entries[entries.length - 1]?.[0]
            return [
              ids,
              entries.length < w.pageSize || last === undefined ? Option.none<string>() : Option.some(`(${last}`)
            ] as const
          }
        ))
  }))

/** Expired tasks found by scanning the history keys of a partition (O(keys)). */
const scanExpiredCandidates = (w: Window, ks: Keyspace, partition: number) =>
  Stream.unwrap(Effect.gen(function*() {
    const redis = yield* RedisClient
    const head = `${partitionPrefix(ks, partition)}:task:`
    return scanKeys(`${head}*:log`, "list", Math.max(w.pageSize, 100)).pipe(
      Stream.grouped(w.pageSize),
      Stream.mapEffect((keys) =>
        redis.use("lindex", async (c) => {
          const p = c.pipeline()
          for (const key of keys) p.lindex(key, -1)
          const replies = (await p.exec()) ?? []
          const ids: Array<Candidate> = []
          replies.forEach(([err, raw], i) => {
            if (err || typeof raw !== "string" || !raw.includes(`"_tag":"TaskExpired"`)) return
            const at = (JSON.parse(raw) as { at?: unknown }).at
            if (typeof at === "number" && at >= w.since && at < w.until) {
              ids.push({ taskId: keys[i]!.slice(head.length, -":log".length), partition, source: "scan" })
            }
          })
          return ids
        })
      ),
      Stream.flattenIterable
    )
  }))

/** The tasks of one partition in the window. */
const partitionCandidates = (w: Window, ks: Keyspace, partition: number) => {
  const keys = partitionKeys(ks, partition)
  const indexed = Stream.fromIterable(indexedStatuses.filter((st) => w.statuses.includes(st))).pipe(
    Stream.flatMap((status) => indexCandidates(w, keys.index(status), partition))
  )
  if (!w.statuses.includes("expired")) return indexed
  const expired = Stream.unwrap(Effect.map(
    w.expiredSource === "auto" ? logCovers(w, keys.events) : Effect.succeed(w.expiredSource === "log"),
    (useLog) => useLog ? logExpiredCandidates(w, keys.events, partition) : scanExpiredCandidates(w, ks, partition)
  ))
  return Stream.concat(indexed, expired)
}

const candidates = (w: Window, ks: Keyspace) =>
  Stream.fromIterable(allPartitions(ks)).pipe(Stream.flatMap((partition) => partitionCandidates(w, ks, partition)))

/** A stored entry as one JSON text without a line break (the scripts never write one; be sure). */
const oneLine = (raw: string): string => raw.includes("\n") ? JSON.stringify(JSON.parse(raw)) : raw

/**
 * The histories of the tasks in the window, as JSON Lines text. The stream's elements are chunks, not
 * lines: their concatenation is the document (a long history spans several chunks).
 */
export const exportHistories = (
  options: ExportOptions = {}
): Stream.Stream<string, RedisError | CorruptEntry | InvalidInput, TaskStore | RedisClient> =>
  Stream.unwrap(Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    const w = yield* windowOf(options)
    let tasks = 0
    let events = 0

    // Each entry is exported whole: one the scripts stored without its task, agent and owner gets the first's.
    const lines = (page: ReadonlyArray<string>, owner: Envelope) => page.map((e) => oneLine(namedHistoryEntry(e, owner)))

    const rest = (taskId: string, owner: Envelope, from: number) =>
      Stream.paginate(from, (start: number) =>
        Effect.gen(function*() {
          const page = yield* redis.use("lrange", (c) => c.lrange(taskKeys(ks, taskId).log, start, start + w.pageSize - 1))
          yield* decodeHistory(page, owner)
          events += page.length
          return [
            page.length === 0 ? [] : ["," + lines(page, owner).join(",")],
            page.length === w.pageSize ? Option.some(start + w.pageSize) : Option.none<number>()
          ] as const
        }))

    const taskChunks = (c: Candidate, first: ReadonlyArray<string>) =>
      Stream.unwrap(Effect.gen(function*() {
        const decoded = yield* decodeHistory(first)
        const head = decoded[0]
        if (head === undefined) return Stream.empty // history gone (retention) since the task was found
        if (w.agent !== undefined && head.agent !== w.agent) return Stream.empty
        events += first.length
        const open = `{"taskId":${JSON.stringify(head.taskId)},"agent":${JSON.stringify(head.agent)},"ownerId":${
          JSON.stringify(head.ownerId)
        },"events":[${lines(first, head).join(",")}`
        const close = Stream.suspend(() => {
          tasks++
          options.onProgress?.({ tasks, events, partition: c.partition, source: c.source })
          return Stream.succeed("]}\n")
        })
        return Stream.concat(
          Stream.succeed(open),
          Stream.concat(first.length === w.pageSize ? rest(c.taskId, head, w.pageSize) : Stream.empty, close)
        )
      }))

    // Batches are cut per partition: a batch's pipeline stays in one slot (one master of a Cluster).
    return Stream.fromIterable(allPartitions(ks)).pipe(
      Stream.flatMap((partition) =>
        partitionCandidates(w, ks, partition).pipe(
          Stream.grouped(w.batchSize),
          Stream.mapEffect((batch) =>
            redis.use("lrange", async (conn) => {
              const p = conn.pipeline()
              for (const c of batch) p.lrange(taskKeys(ks, c.taskId).log, 0, w.pageSize - 1)
              const replies = (await p.exec()) ?? []
              return batch.map((c, i) => {
                const [err, page] = replies[i] ?? [new Error("missing pipeline reply"), null]
                if (err) throw err
                return { c, first: page as ReadonlyArray<string> }
              })
            })
          )
        )
      ),
      Stream.flattenIterable,
      Stream.flatMap(({ c, first }) => taskChunks(c, first))
    )
  }))

/** The same selection as `exportHistories`, as decoded records (one whole history in memory at a time). */
export const exportRecords = (
  options: ExportOptions = {}
): Stream.Stream<HistoryRecord, RedisError | CorruptEntry | InvalidInput, TaskStore | RedisClient> =>
  Stream.unwrap(Effect.gen(function*() {
    const store = yield* TaskStore
    const w = yield* windowOf(options)
    let tasks = 0
    let events = 0
    return candidates(w, store.keyspace).pipe(
      Stream.mapEffect((c) =>
        Effect.map(store.getHistory(c.taskId), (history) => {
          const head = history[0]
          if (head === undefined || (w.agent !== undefined && head.agent !== w.agent)) return []
          tasks++
          events += history.length
          options.onProgress?.({ tasks, events, partition: c.partition, source: c.source })
          return [{ taskId: head.taskId, agent: head.agent, ownerId: head.ownerId, events: history }]
        })
      ),
      Stream.flattenIterable
    )
  }))

/** How many tasks with a hash the window holds (the expired ones are not counted): for progress bars. */
export const countIndexed = (
  options: Pick<ExportOptions, "since" | "until" | "statuses"> = {}
): Effect.Effect<number, RedisError | InvalidInput, TaskStore | RedisClient> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const w = yield* windowOf(options)
    const counted = allPartitions(store.keyspace).flatMap((partition) =>
      indexedStatuses.filter((s) => w.statuses.includes(s)).map((status) => ({ partition, status }))
    )
    return yield* redis.use("zcount", async (c) => {
      const replies = await perPartition(c, counted, (x) => x.partition, (p, x) =>
        p.zcount(partitionKeys(store.keyspace, x.partition).index(x.status), w.since, `(${w.until}`))
      return replies.reduce((sum, [err, n]) => (err ? sum : sum + Number(n)), 0)
    })
  })

// ---------------------------------------------------------------------------------------------------
// Import

/** Import refused: the target namespace already holds keys. */
export class NamespaceNotEmpty extends Schema.TaggedError<NamespaceNotEmpty>()("NamespaceNotEmpty", {
  namespace: Schema.String,
  key: Schema.String
}) {
  override get message() {
    return `namespace ${this.namespace} is not empty (it has ${this.key}); import only into an empty namespace`
  }
}

/** A line of an import that is not a valid task history. */
export class InvalidHistoryLine extends Schema.TaggedError<InvalidHistoryLine>()("InvalidHistoryLine", {
  line: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `line ${this.line}: ${this.reason}`
  }
}

const HistoryLine = Schema.Struct({
  taskId: TaskId,
  agent: AgentName,
  ownerId: Schema.String,
  events: Schema.Array(Envelope)
})
const decodeHistoryLine = Schema.decodeUnknownExit(HistoryLine)

export interface ImportOptions {
  /** Tasks written per pipelined round trip (default 100). */
  readonly batchSize?: number
  readonly onProgress?: (progress: ImportProgress) => void
}

export interface ImportProgress {
  readonly lines: number
  readonly tasks: number
  readonly events: number
}

export type ImportReport = ImportProgress

/**
 * Fails with `NamespaceNotEmpty` when any key of the namespace exists (SCAN MATCH `{ns:*`, stopping at
 * the first key; O(keys in the database) for an empty one). The namespace meta hash may exist, with
 * the same partition count; it is written when missing.
 */
export const assertEmptyNamespace: Effect.Effect<void, NamespaceNotEmpty | RedisError, TaskStore | RedisClient> = Effect
  .gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    const meta = namespaceKeys(ks).meta
    const stored = yield* redis.use("namespace meta", (c) => c.hget(meta, "partitions"))
    if (stored !== null && Number(stored) !== ks.partitions) {
      return yield* new NamespaceNotEmpty({ namespace: ks.namespace, key: `${meta} (partitions ${stored})` })
    }
    const found = yield* scanKeys(`{${ks.namespace}:*`, undefined, 1000).pipe(Stream.take(1), Stream.runHead)
    if (found._tag === "Some") return yield* new NamespaceNotEmpty({ namespace: ks.namespace, key: found.value })
    yield* redis.use("namespace meta", (c) => c.hsetnx(meta, "partitions", ks.partitions))
  })

interface ParsedLine {
  readonly line: number
  readonly taskId: string
  readonly entries: ReadonlyArray<string>
  readonly events: ReadonlyArray<Envelope>
}

const parseLine = (text: string, line: number): Effect.Effect<ParsedLine, InvalidHistoryLine> =>
  Effect.gen(function*() {
    const fail = (reason: string) => Effect.fail(new InvalidHistoryLine({ line, reason }))
    let raw: unknown
    try {
      raw = JSON.parse(text)
    } catch (e) {
      return yield* fail(`not JSON: ${e instanceof Error ? e.message : String(e)}`)
    }
    const exit = decodeHistoryLine(raw)
    if (exit._tag === "Failure") return yield* fail(`not a task history: ${String(exit.cause).slice(0, 300)}`)
    const record = exit.value
    const first = record.events[0]
    if (first === undefined) return yield* fail(`task ${record.taskId} has no events`)
    if (first.event._tag !== "TaskEnqueued") return yield* fail(`task ${record.taskId} does not start with TaskEnqueued`)
    for (const [i, e] of record.events.entries()) {
      if (e.taskId !== record.taskId || e.agent !== record.agent || e.ownerId !== record.ownerId) {
        return yield* fail(`event ${i + 1} belongs to ${e.taskId}/${e.agent}/${e.ownerId}, not the line's task`)
      }
      if (e.version !== i + 1) return yield* fail(`event ${i + 1} has version ${e.version}`)
    }
    const rawEvents = (raw as { readonly events: ReadonlyArray<unknown> }).events
    return { line, taskId: record.taskId, entries: rawEvents.map((e) => JSON.stringify(e)), events: record.events }
  })

/**
 * Imports JSON Lines histories (one task per element of `lines`; blank lines are skipped) into the empty
 * namespace of the `TaskStore`: each history list is written as given and its status projection (hash,
 * steering list, status index, delayed set) rebuilt from its fold. Stops at the first invalid line
 * (`InvalidHistoryLine`); the tasks before it stay imported. Imported live tasks are not put on their
 * queues: an imported namespace is an archive to replay and verify, not to run.
 */
export const importHistories = <E, R>(
  lines: Stream.Stream<string, E, R>,
  options: ImportOptions = {}
): Effect.Effect<
  ImportReport,
  E | NamespaceNotEmpty | InvalidHistoryLine | InvalidInput | RedisError,
  R | TaskStore | RedisClient
> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const redis = yield* RedisClient
    const ks = store.keyspace
    const batchSize = yield* intIn("batchSize", options.batchSize, 100, 1, 10_000)
    yield* assertEmptyNamespace
    const conn = yield* redis.use("script load", loadProjectScript)
    let lineNo = 0
    let tasks = 0
    let events = 0

    yield* lines.pipe(
      Stream.map((text) => ({ text, line: ++lineNo })),
      Stream.filter(({ text }) => text.trim() !== ""),
      Stream.grouped(batchSize),
      Stream.runForEach((batch) =>
        Effect.gen(function*() {
          const parsed = yield* Effect.forEach(batch, ({ text, line }) => parseLine(text, line))
          const replies = yield* Effect.tryPromise({
            try: async () => {
              // One pipeline per partition (slot), replies in line order.
              const replies = await perPartition(conn, parsed, (t) => partitionOf(ks, t.taskId), (p, t) =>
                callProject(p, projectArgs(ks, t.taskId, "import", projectAll(t.events), t.entries)))
              return replies.map(([err, raw]) => {
                if (err) throw err
                return parseProjectReply(raw)
              })
            },
            catch: (e) => toRedisError("import", e)
          })
          for (const [i, reply] of replies.entries()) {
            const t = parsed[i]!
            if (reply._tag !== "ok") {
              return yield* new InvalidHistoryLine({ line: t.line, reason: `task ${t.taskId} appears more than once` })
            }
            tasks++
            events += t.entries.length
          }
          options.onProgress?.({ lines: lineNo, tasks, events })
        })
      )
    )
    return { lines: lineNo, tasks, events }
  })
