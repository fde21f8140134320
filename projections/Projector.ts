/**
 * The metrics projector: follows each partition's event log through the consumer group `projector`,
 * folds batches with `MetricsBuckets.foldEnvelopes` and commits them; rebuilds and verifies the buckets
 * from the logs; and answers timeline queries.
 *
 * Invariants kept here:
 * - a batch's bucket increments, the per-task memory and the checkpoint (the last applied log id) are
 *   written in ONE atomic step (`streams/lua/metrics_apply.lua`), which refuses if the checkpoint moved
 *   since the batch was read; entries at or below the checkpoint are skipped. So every log entry is
 *   counted exactly once, however often the group redelivers it, and however the log is cut into batches;
 * - the fold always continues from the checkpoint: if the delivered batch does not start right after it
 *   (entries went to another consumer, or were delivered before a crash), the missing entries are read
 *   from the log itself, so the group only says *when* to look and never decides *what* is counted. The
 *   commit script checks that the checkpoint is the one the batch was folded from and that the batch follows
 *   it, so a batch costs three round trips (read, task memory, commit) and the checkpoint is read only
 *   when this projector does not know it yet or the script says it moved;
 * - new entries are read with NOACK (no pending list to fill and ack: about a quarter of the projection's
 *   Redis CPU): what a projector read but never committed (a crash in between) is folded by the next
 *   holder's first batch, which starts from the checkpoint, or, when the log stays quiet, by the catch-up to
 *   its end that each holder runs at start and every `orphanIdleMs` while idle. Entries left pending by versions that acked (or read so by
 *   hand) are still adopted after `orphanIdleMs`, folded and acked;
 * - one process at a time follows a partition's log: the holder of its lease, `{ns:p}:projector:lease`
 *   (ADR 0015). The others stand by. Projectors racing over one log mostly redo each other's batches. The
 *   lease only saves that work: correctness rests on the commit script. The leases are shared out: each
 *   process leads at most ⌈partitions / live projectors⌉ (counted in `{ns}:projectors`);
 * - blocking reads use a dedicated connection with a finite BLOCK, and are interruptible.
 */
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { hostname } from "node:os"
import { fileURLToPath } from "node:url"
import { Clock, Context, Effect, Layer, Result, Schedule, Schema } from "effect"
import type { Scope } from "effect"
import {
  allPartitions,
  BUCKET_INDEX_COMPLETE,
  type Keyspace,
  MEMORY_ANCHOR,
  namespaceKeys,
  partitionKeys,
  PROJECTOR_GROUP
} from "../streams/Keys.ts"
import { masters, RedisClient, type RedisConnection } from "../streams/RedisClient.ts"
import { compareIds } from "../streams/StreamId.ts"
import { type CorruptEntry, type RedisError, toRedisError } from "../streams/StreamError.ts"
import { decodeLogFacts, type LogFacts, TaskEvent, type TaskEventTag } from "../streams/TaskEvent.ts"
import {
  addBuckets,
  ALL_AGENTS,
  type Bucket,
  counterNames,
  bucketStart,
  decodeOpenTask,
  emptyState,
  encodeOpenTask,
  foldEnvelopes,
  type MetricsOptions,
  type MetricsState,
  type OpenTask,
  parseBucketId,
  type TimelinePoint,
  toTimelinePoint
} from "./MetricsBuckets.ts"

/** The checkpoint moved under every attempt to commit (another projector keeps committing first). */
export class ProjectionConflict extends Schema.TaggedError<ProjectionConflict>()("ProjectionConflict", {
  partition: Schema.Number,
  checkpoint: Schema.String
}) {
  override get message() {
    return `metrics projection of partition ${this.partition}: checkpoint kept moving (at ${this.checkpoint})`
  }
}

/** The log has been trimmed: rebuilding the live buckets from it would lose what the trimmed part counted. */
export class LogTrimmed extends Schema.TaggedError<LogTrimmed>()("LogTrimmed", {
  partition: Schema.Number
}) {
  override get message() {
    return `the event log of partition ${this.partition} has been trimmed: the live metrics cannot be rebuilt from it`
  }
}

/** A timeline query whose range is empty of meaning (reversed) or too long to read at once. */
export class TimelineRangeInvalid extends Schema.TaggedError<TimelineRangeInvalid>()("TimelineRangeInvalid", {
  from: Schema.Number,
  to: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `timeline range [${this.from}, ${this.to}): ${this.reason}`
  }
}

export type ProjectorError = RedisError | CorruptEntry | ProjectionConflict

export interface ProjectorOptions extends MetricsOptions {
  /**
   * Entries read per XREADGROUP and folded per commit (default 100). Folding a batch holds the event loop (and
   * its commit holds Redis) for a moment; small batches keep that moment short next to the process's turns
   * (bench, one worker slot: p99 start→complete 2.6–3.2 ms with 500, 1.4–1.5 ms with 100, the same rate).
   */
  readonly batchSize?: number
  /** BLOCK of the follow loop's reads, in ms (default 2000); bounds how long an interrupt can wait. */
  readonly blockMs?: number
  /**
   * The follow loop reads a partition at most this often, in ms, unless a read filled a whole batch (default
   * 200): under a steady trickle of events it folds a few hundred ms of them per commit instead of one
   * commit per event, so metrics cost a round trip per interval, not per transition. It is how stale the
   * metrics may be.
   */
  readonly pollIntervalMs?: number
  /**
   * Only the process holding a partition's projector lease (`{ns:p}:projector:lease`) follows its log; the
   * others stand by and take over when it lapses: projectors racing over one log (every worker process runs
   * one) mostly redo each other's batches. This is its time to live, in ms (default 10,000: how long a
   * partition's metrics can stall after its projector's process dies); the holder renews it four times per
   * time to live, a standby checks every half of it. Keep `blockMs` well below it. Correctness does not rest on it: the commit script's checkpoint check does.
   */
  readonly leaseMs?: number
  /** This process's consumer name in the group (default host-pid). */
  readonly consumer?: string
  /**
   * How long the follow loop stays idle before it folds the log to its end (entries a crashed consumer read
   * but never committed) and adopts entries pending with other consumers longer than this (default 60 s).
   */
  readonly orphanIdleMs?: number
}

/** One read of the group. */
export interface PollResult {
  /** Entries the group delivered (all acked after the commit). */
  readonly delivered: number
  /** Entries folded into the buckets by this call (delivered, or read from the log to fill a gap). */
  readonly applied: number
  /** The checkpoint afterwards ("" when nothing was ever applied). */
  readonly checkpoint: string
}

/** A partition's projection as stored in one key set. */
export interface StoredState {
  readonly checkpoint: string
  readonly state: MetricsState
}

export interface Difference {
  readonly partition: number
  /** `bucket` (id `agent:startSeconds`) or `open` (a task's memory). */
  readonly kind: "bucket" | "open"
  readonly id: string
  readonly live: Bucket | OpenTask | undefined
  readonly rebuilt: Bucket | OpenTask | undefined
}

export interface VerifyReport {
  readonly equal: boolean
  /** The live checkpoint of each partition that the log was folded up to. */
  readonly checkpoints: ReadonlyArray<string>
  readonly differences: ReadonlyArray<Difference>
}

export interface RebuildReport {
  readonly set: string
  readonly partitions: ReadonlyArray<{
    readonly partition: number
    readonly checkpoint: string
    readonly entries: number
    readonly buckets: number
    readonly openTasks: number
  }>
}

/** Whether the live metrics keep up with the event logs (the dashboard's and `/metrics`' projection gauges). */
export interface ProjectionStatus {
  /** Processes counted in `{ns}:projectors` now (each runs a follow loop; 0: nobody projects). */
  readonly liveProjectors: number
  /**
   * Age (ms, from its stream id) of the oldest log entry the live metrics do not count yet, over all
   * partitions; null when they count every entry. It grows with the clock while nobody projects.
   */
  readonly oldestUnprojectedAgeMs: number | null
}

export interface TimelineQuery {
  /** One agent's buckets; all agents together when absent. */
  readonly agent?: string | undefined
  /** Range in ms since the epoch: buckets whose start lies in [bucket of `from`, `to`). */
  readonly from: number
  readonly to: number
}

/** One bucket of a timeline query as stored: `start` in seconds since the epoch. */
export interface StoredBucket {
  readonly agent: string
  readonly start: number
  readonly bucket: Bucket
}

/** The most buckets one timeline query reads (per partition). */
export const MAX_TIMELINE_BUCKETS = 10_000

const DEFAULTS = { batchSize: 100, blockMs: 2_000, orphanIdleMs: 60_000, pollIntervalMs: 200, leaseMs: 10_000 }

/** Takes the lease KEYS[1] for ARGV[1] for ARGV[2] ms, or renews it if ARGV[1] holds it; 1 if held now, else 0. */
const HOLD_LEASE = `
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`
/**
 * Vouches in KEYS[1] that projector ARGV[1] is alive for ARGV[2] ms more (Redis' clock), forgets the ones whose
 * time ran out, and returns how many are alive.
 */
/** Lua: `now`, Redis' clock in ms (the projectors' registrations are on it, whatever the clients' clocks say). */
const REDIS_NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
const ANNOUNCE = `${REDIS_NOW}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZCARD', KEYS[1])
`
/** How many projectors in KEYS[1] still vouch they are alive, by Redis' clock (as ANNOUNCE counts them). */
const LIVE_PROJECTORS = `${REDIS_NOW}
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
`
/** The id of the first entry of log KEYS[2] after the checkpoint in field ARGV[1] of KEYS[1], or nil. */
const FIRST_UNPROJECTED = `
local checkpoint = redis.call('HGET', KEYS[1], ARGV[1])
local first = redis.call('XRANGE', KEYS[2], (checkpoint and checkpoint ~= '') and '(' .. checkpoint or '-', '+', 'COUNT', 1)[1]
return first and first[1]
`
/** Gives the lease KEYS[1] up if ARGV[1] holds it. */
const DROP_LEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0`
const MAX_STALE_COMMITS = 50
/** How late after a bucket's end its last write may come (a projector that is not stalled) before reads skip it. */
const EXPIRED_BUCKET_MARGIN_SECONDS = 60
/** Buckets per commit when a rebuild writes its result. */
const REBUILD_CHUNK = 200

// ---------------------------------------------------------------------------------------------------------
// Stream ids and raw replies

type RawEntry = [id: string, fields: Array<string> | null]

const entryJson = (fields: Array<string> | null): string | undefined => {
  if (fields === null) return undefined
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === "e") return fields[i + 1]
  return undefined
}

/** A partition-log entry as the projector reads it: its stream id and its metrics facts. */
export type LogEntry = LogFacts & { readonly id: string }

/**
 * The opening every envelope our scripts write has (streams/lua/lib.lua `envelope`), up to the event's tag:
 * all the fold needs of most events, read without parsing the rest (the payload, the output).
 */
const ENVELOPE_OPENING = /^\{"version":\d+,"at":(\d+),"taskId":"([^"\\]+)","agent":"([^"\\]+)","ownerId":"[^"\\]*","event":\{"_tag":"([A-Za-z]+)"/
/** Events whose other fields the fold reads (decision, lease, resumed): always fully decoded. */
const DETAILED_EVENTS: ReadonlySet<string> = new Set<TaskEventTag>([
  "TaskFailed", "TaskRecovered", "TaskCancelled", "TaskWaiting", "ToolResultReceived", "ChildTaskFinished", "TaskWaitTimedOut"
])
const EVENT_TAGS: ReadonlySet<string> = new Set(Object.keys(TaskEvent.cases))

/**
 * The metrics facts of one entry's envelope. The common events of a well-formed envelope are read from its
 * opening (a tenth of the projector's client CPU went to `JSON.parse` and the schema, mostly for payloads
 * the fold never reads); anything else goes through the full decoder. Both give the same fold (a property
 * test checks it).
 */
export const decodeEntryFacts = (json: string): Result.Result<LogFacts, CorruptEntry> => {
  const m = ENVELOPE_OPENING.exec(json)
  if (m !== null && json.endsWith("}}") && EVENT_TAGS.has(m[4]!) && !DETAILED_EVENTS.has(m[4]!)) {
    return Result.succeed({ at: Number(m[1]), taskId: m[2]!, agent: m[3]!, event: { _tag: m[4] as TaskEventTag } })
  }
  return decodeLogFacts(json)
}

/** Decodes entries (their metrics facts only, see `LogFacts`); deleted entries (no fields) are left out. */
const decodeEntries = (raw: ReadonlyArray<RawEntry>): Effect.Effect<Array<LogEntry>, CorruptEntry> =>
  Effect.suspend(() => {
    const out: Array<LogEntry> = []
    for (const [id, fields] of raw) {
      const json = entryJson(fields)
      if (json === undefined) continue
      const facts = decodeEntryFacts(json)
      if (Result.isFailure(facts)) return Effect.fail(facts.failure)
      out.push({ ...facts.success, id })
    }
    return Effect.succeed(out)
  })

const recordOfNumbers = (flat: Record<string, string>): Bucket => {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(flat)) out[k] = Number(v)
  return out
}

const bucketEquals = (a: Bucket, b: Bucket): boolean => {
  const ka = Object.keys(a).filter((k) => a[k] !== 0)
  const kb = Object.keys(b).filter((k) => b[k] !== 0)
  return ka.length === kb.length && ka.every((k) => a[k] === b[k])
}

const countersOf = (b: Bucket): Bucket => Object.fromEntries(counterNames.map((c) => [c, b[c] ?? 0]))

const openEquals = (a: OpenTask, b: OpenTask): boolean => a.queuedAt === b.queuedAt && a.claimedAt === b.claimedAt

// ---------------------------------------------------------------------------------------------------------
// The commit script

const applySource = readFileSync(fileURLToPath(new URL("../streams/lua/metrics_apply.lua", import.meta.url)), "utf8")
  .replace("@MEMORY_ANCHOR@", MEMORY_ANCHOR)

type ApplyCaller = (numKeys: number, ...args: ReadonlyArray<string | number>) => Promise<unknown>

/**
 * Compiles the commit script on every master (a syntax error fails here) and returns its caller: EVALSHA, and EVAL
 * when a server answers NOSCRIPT (restarted, or its scripts flushed), which loads it there again. Not ioredis'
 * `defineCommand`: its command object keeps each reply reachable from an old-generation closure until the next
 * full GC (ADR 0025).
 */
const installApply = async (conn: RedisConnection): Promise<ApplyCaller> => {
  const sha = createHash("sha1").update(applySource).digest("hex")
  await Promise.all(masters(conn).map((node) => node.script("LOAD", applySource)))
  return async (numKeys, ...args) => {
    try {
      return await conn.evalsha(sha, numKeys, ...args)
    } catch (e) {
      if (!String(e).includes("NOSCRIPT")) throw e
      return await conn.eval(applySource, numKeys, ...args)
    }
  }
}

// ---------------------------------------------------------------------------------------------------------

export class MetricsProjector extends Context.Service<MetricsProjector, {
  readonly keyspace: Keyspace
  readonly options: MetricsOptions
  /** This process's consumer name in the `projector` group (maintenance keeps it registered as live). */
  readonly consumer: string
  /**
   * The field of each partition's `checkpoints` hash holding the live checkpoint: the last log id the live
   * buckets count (maintenance never trims the log past it).
   */
  readonly checkpointField: string
  /** Follows every partition's log until interrupted (one fiber and one dedicated connection each). */
  readonly run: Effect.Effect<never, ProjectorError, Scope.Scope>
  /**
   * One read of a partition through the group, folded and committed, then acked. Without `blockMs` the
   * read does not block (and uses the shared connection).
   */
  readonly poll: (
    partition: number,
    options?: { readonly count?: number; readonly blockMs?: number; readonly conn?: RedisConnection }
  ) => Effect.Effect<PollResult, ProjectorError>
  /**
   * Commits consecutive log entries of a partition (as one group read returns them). Entries at or
   * below the checkpoint are skipped; entries between the checkpoint and the first one are read from
   * the log first. Returns how many entries were folded.
   */
  readonly apply: (
    partition: number,
    entries: ReadonlyArray<LogEntry>
  ) => Effect.Effect<{ readonly applied: number; readonly checkpoint: string }, ProjectorError>
  /** Folds every partition up to the end of its log without blocking; returns the entries applied. */
  readonly catchUp: (options?: { readonly count?: number }) => Effect.Effect<number, ProjectorError>
  /** A partition's stored projection in a key set (default `live`). */
  readonly readState: (partition: number, set?: string) => Effect.Effect<StoredState, RedisError>
  /**
   * Recomputes the buckets from the start of the logs. `into: "live"` replaces the live buckets and
   * memory with the fold up to the live checkpoint, in chunks that each commit only while that
   * checkpoint is unchanged (so a running projector's increments are never lost or doubled; a moved
   * checkpoint restarts the rebuild); refused with `LogTrimmed` once a log has been trimmed. Any other
   * set name (default `rebuild`) is cleared and filled from what each log holds, up to its current end.
   */
  readonly rebuild: (
    options?: { readonly into?: string }
  ) => Effect.Effect<RebuildReport, ProjectorError | LogTrimmed>
  /**
   * Folds each log up to its live checkpoint and compares the result with the live keys. For a trimmed
   * log only the counters of the buckets after its first entry are compared (no latencies, no memory).
   * Buckets past their retention TTL show up as differences.
   */
  readonly verify: Effect.Effect<VerifyReport, ProjectorError>
  /**
   * The live buckets of the range as stored (counters and histogram bins), summed over partitions, empty
   * buckets included: for callers that merge buckets (a coarser timeline, a window's totals).
   */
  readonly readBuckets: (
    query: TimelineQuery
  ) => Effect.Effect<ReadonlyArray<StoredBucket>, RedisError | TimelineRangeInvalid>
  /** How many processes project, and how far the live metrics trail the logs. */
  readonly status: Effect.Effect<ProjectionStatus, RedisError>
  /** The live buckets of the range, summed over partitions, with derived figures; empty buckets included. */
  readonly readTimeline: (
    query: TimelineQuery
  ) => Effect.Effect<ReadonlyArray<TimelinePoint>, RedisError | TimelineRangeInvalid>
}>()("factorial/projections/MetricsProjector") {
  static readonly layer = (keyspace: Keyspace, options: ProjectorOptions) =>
    Layer.effect(MetricsProjector, makeProjector(keyspace, options))
}

const makeProjector = Effect.fnUntraced(function*(keyspace: Keyspace, options: ProjectorOptions) {
  if (!Number.isInteger(options.bucketSeconds) || options.bucketSeconds <= 0) {
    return yield* Effect.die(new Error(`bucketSeconds must be a positive integer, got ${options.bucketSeconds}`))
  }
  if (!(options.retentionSeconds >= 0)) {
    return yield* Effect.die(new Error(`retentionSeconds must be >= 0, got ${options.retentionSeconds}`))
  }
  const redis = yield* RedisClient
  const applyScript = yield* redis.use("script load metrics_apply", installApply)
  const batchSize = options.batchSize ?? DEFAULTS.batchSize
  const blockMs = options.blockMs ?? DEFAULTS.blockMs
  const pollIntervalMs = options.pollIntervalMs ?? DEFAULTS.pollIntervalMs
  const orphanIdleMs = options.orphanIdleMs ?? DEFAULTS.orphanIdleMs
  const leaseMs = options.leaseMs ?? DEFAULTS.leaseMs
  const consumer = options.consumer ?? `${hostname()}-${process.pid}`
  const metricsOptions: MetricsOptions = {
    bucketSeconds: options.bucketSeconds,
    retentionSeconds: options.retentionSeconds
  }
  const { bucketSeconds } = metricsOptions
  const pk = (p: number) => partitionKeys(keyspace, p)
  const mk = (p: number, set = "live") => pk(p).metrics(bucketSeconds, set)

  const getCheckpoint = (p: number, set = "live") =>
    redis.use("metrics checkpoint", async (c) => (await c.hget(pk(p).checkpoints, mk(p, set).checkpointField)) ?? "")

  /** Up to `count` log entries after `after` (exclusive) and up to `upTo` (inclusive). */
  const readLog = (p: number, after: string, upTo: string, count: number) =>
    Effect.flatMap(
      redis.use("metrics xrange", (c) =>
        c.call("XRANGE", pk(p).events, after === "" ? "-" : `(${after}`, upTo, "COUNT", count) as Promise<
          Array<RawEntry>
        >),
      (raw) => Effect.map(decodeEntries(raw), (entries) => ({ raw, entries }))
    )

  /**
   * The checkpoint this projector last saw per partition (read, or written by its own commit). Folding starts
   * from it without reading it again: the commit script refuses a batch when the stored checkpoint differs
   * and answers with it, so a stale one costs a retry, never a wrong count.
   */
  const seen = new Map<number, string>()
  const lastCheckpoint = (p: number) =>
    seen.has(p) ? Effect.succeed(seen.get(p)!) : Effect.tap(getCheckpoint(p), (c) => Effect.sync(() => seen.set(p, c)))

  /**
   * Folds `batch` (consecutive log entries; right after `checkpoint` unless `first` is set, see
   * metrics_apply.lua) onto the stored memory of its tasks and commits it. Otherwise nothing is written:
   * `stale` when the checkpoint moved meanwhile, `gap` when the batch does not follow it.
   * (This step, `advance` and `settle` take the batch as an argument of their generator, never as a variable a
   * generator made per call closes over, which would keep every batch past young-generation GCs: ADR 0025.)
   */
  const commitBatch = Effect.fnUntraced(function*(p: number, checkpoint: string, batch: ReadonlyArray<LogEntry>, first: string) {
    const keys = mk(p)
    const taskIds = [...new Set(batch.map((e) => e.taskId))]
    const stored = yield* redis.use("metrics memory", (c) => c.hmget(keys.open, ...taskIds))
    const open = new Map<string, OpenTask>()
    taskIds.forEach((id, i) => {
      const s = stored[i]
      if (s !== null && s !== undefined) open.set(id, decodeOpenTask(s))
    })
    const folded = foldEnvelopes(metricsOptions, batch, { buckets: new Map(), open })
    const bucketKeys: Array<string> = []
    const increments: Array<Array<string>> = []
    for (const [id, bucket] of folded.buckets) {
      const { agent, startSeconds } = parseBucketId(id)
      bucketKeys.push(keys.bucket(agent, startSeconds))
      increments.push(Object.entries(bucket).flatMap(([f, n]) => [f, String(n)]))
    }
    // Only the memory the batch changed is written ("" forgets the task).
    const memory = taskIds.flatMap((id) => {
      const before = open.get(id)
      const after = folded.open.get(id)
      const encoded = after === undefined ? "" : encodeOpenTask(after)
      return encoded === (before === undefined ? "" : encodeOpenTask(before)) ? [] : [id, encoded]
    })
    const reply = (yield* redis.use("metrics apply", () =>
      applyScript(
        4 + bucketKeys.length,
        pk(p).checkpoints,
        keys.open,
        pk(p).events,
        keys.bucketIndex,
        ...bucketKeys,
        keys.checkpointField,
        checkpoint,
        batch[batch.length - 1]!.id,
        metricsOptions.retentionSeconds,
        "add",
        JSON.stringify(increments),
        JSON.stringify(memory),
        first,
        keys.bucketPrefix,
        BUCKET_INDEX_COMPLETE
      ))) as Array<string>
    return reply[0] === "ok"
      ? { _tag: "ok" as const }
      : { _tag: reply[0] === "gap" ? "gap" as const : "stale" as const, current: reply[1] ?? "" }
  })

  /**
   * Moves the checkpoint up to `upTo`, folding `delivered` (consecutive entries ending at `upTo`) when they
   * start right after the checkpoint, and reading the log otherwise. Returns entries applied.
   */
  const advance = Effect.fnUntraced(function*(p: number, delivered: ReadonlyArray<LogEntry>, upTo: string) {
    let applied = 0
    let stale = 0
    let checkpoint = yield* lastCheckpoint(p)
    let fromGroup = delivered
    while (compareIds(upTo, checkpoint) > 0) {
      // The delivered entries past the checkpoint, if they follow it (the script checks); else the log's.
      let batch: ReadonlyArray<LogEntry> = fromGroup.filter((e) => compareIds(e.id, checkpoint) > 0)
      const first = batch.length > 0 ? batch[0]!.id : ""
      if (batch.length === 0) {
        batch = (yield* readLog(p, checkpoint, upTo, batchSize)).entries
        // Nothing left up to `upTo`: those entries were trimmed from the log before they were folded.
        if (batch.length === 0) break
      }
      const result = yield* commitBatch(p, checkpoint, batch, first)
      if (result._tag === "ok") {
        applied += batch.length
        stale = 0
        checkpoint = batch[batch.length - 1]!.id
      } else {
        checkpoint = result.current
        if (result._tag === "gap") fromGroup = []
        else if (++stale >= MAX_STALE_COMMITS) return yield* new ProjectionConflict({ partition: p, checkpoint })
      }
      seen.set(p, checkpoint)
    }
    return { applied, checkpoint }
  })

  const apply = (p: number, entries: ReadonlyArray<LogEntry>) =>
    entries.length === 0
      ? Effect.map(getCheckpoint(p), (checkpoint) => ({ applied: 0, checkpoint }))
      : advance(p, entries, entries[entries.length - 1]!.id)

  const groupsReady = new Set<number>()
  const ensureGroup = (p: number) =>
    groupsReady.has(p) ? Effect.void : redis.use("metrics xgroup", async (c) => {
      try {
        await c.xgroup("CREATE", pk(p).events, PROJECTOR_GROUP, "0", "MKSTREAM")
      } catch (err) {
        if (!String(err).includes("BUSYGROUP")) throw err
      }
      groupsReady.add(p)
    })

  const ack = (p: number, ids: ReadonlyArray<string>) =>
    ids.length === 0 ? Effect.void : redis.use("metrics xack", (c) => c.xack(pk(p).events, PROJECTOR_GROUP, ...ids))

  /**
   * Folds entries the group delivered (raw, possibly with deleted ones). New entries (`pending` false) were
   * read with NOACK: consecutive, and left in no pending list. Pending ones (this consumer's from before a
   * restart, or adopted from another) are folded from the log and acked after the commit.
   */
  const settle = Effect.fnUntraced(function*(p: number, raw: ReadonlyArray<RawEntry>, pending: boolean) {
    if (raw.length === 0) return { delivered: 0, applied: 0, checkpoint: yield* lastCheckpoint(p) }
    const entries = yield* decodeEntries(raw)
    const upTo = raw[raw.length - 1]![0]
    const result = yield* advance(p, pending ? [] : entries, upTo)
    if (pending) yield* ack(p, raw.map(([id]) => id))
    return { delivered: raw.length, ...result }
  })

  /**
   * Folds a partition up to the last entry of its log. New entries are read with NOACK, so what a consumer
   * read but never committed (it crashed in between) is pending nowhere: the next batch of any consumer
   * folds it (its batch does not follow the checkpoint), and when no new entry comes, this does.
   */
  const catchUpToEnd = (p: number) =>
    Effect.gen(function*() {
      const last = yield* redis.use("metrics xrevrange", (c) =>
        c.xrevrange(pk(p).events, "+", "-", "COUNT", 1) as Promise<Array<RawEntry>>)
      if (last.length === 0) return 0
      return (yield* advance(p, [], last[0]![0])).applied
    })

  const readGroup = (p: number, conn: RedisConnection, count: number, from: string, block?: number) =>
    Effect.tryPromise({
      try: async () => {
        // The typed method, not `call`: its reply has the same shape whatever the protocol.
        const xreadgroup = conn.xreadgroup as unknown as (...args: ReadonlyArray<string | number>) => Promise<unknown>
        const reply = (await xreadgroup.call(
          conn,
          "GROUP",
          PROJECTOR_GROUP,
          consumer,
          "COUNT",
          count,
          ...(from === ">" ? ["NOACK"] : []), // see settle
          ...(block === undefined ? [] : ["BLOCK", block]),
          "STREAMS",
          pk(p).events,
          from
        )) as Array<[string, Array<RawEntry>]> | null
        return reply?.[0]?.[1] ?? []
      },
      catch: (cause) => {
        // The log or the group was deleted: create the group again on the next read.
        if (String(cause).includes("NOGROUP")) groupsReady.delete(p)
        return toRedisError("metrics xreadgroup", cause)
      }
    })

  const poll = (
    p: number,
    o?: { readonly count?: number; readonly blockMs?: number; readonly conn?: RedisConnection }
  ) =>
    Effect.gen(function*() {
      yield* ensureGroup(p)
      const raw = yield* readGroup(p, o?.conn ?? redis.conn, o?.count ?? batchSize, ">", o?.blockMs)
      return yield* settle(p, raw, false)
    })

  /** Settles the entries this consumer was given but never acked (a crash between commit and ack). */
  const drainOwnPending = (p: number) =>
    Effect.gen(function*() {
      yield* ensureGroup(p)
      let from = "0"
      while (true) {
        const raw = yield* readGroup(p, redis.conn, batchSize, from)
        if (raw.length === 0) return
        yield* settle(p, raw, true)
        from = raw[raw.length - 1]![0]
      }
    })

  /** Takes over entries left pending by consumers that are gone, and settles them. */
  const adoptOrphans = (p: number) =>
    Effect.gen(function*() {
      let cursor = "0-0"
      do {
        const [next, raw] = (yield* redis.use("metrics xautoclaim", (c) =>
          c.call(
            "XAUTOCLAIM",
            pk(p).events,
            PROJECTOR_GROUP,
            consumer,
            orphanIdleMs,
            cursor,
            "COUNT",
            batchSize
          ))) as [string, Array<RawEntry>]
        yield* settle(p, raw, true)
        cursor = next
      } while (cursor !== "0-0")
    })

  /** Takes or renews this process's lease on partition `p`'s log; whether it holds it now. */
  const holdLease = (p: number) =>
    Effect.map(
      redis.use("metrics lease", (c) => c.eval(HOLD_LEASE, 1, pk(p).projectorLease, consumer, leaseMs)),
      (held) => Number(held) === 1
    )

  // Sharing the leases out: each process leads at most its share of the partitions, ⌈partitions / live
  // projectors⌉, counting the live ones in `{ns}:projectors` (renewed every quarter of the lease's time to
  // live). A process over its share gives up its highest partitions; the processes under it take them over.
  const partitions = allPartitions(keyspace)
  const projectorsKey = namespaceKeys(keyspace).projectors
  /** The partitions this process leads now. */
  const led = new Set<number>()
  let liveProjectors = 1
  const share = () => Math.ceil(partitions.length / Math.max(1, liveProjectors))
  /** Whether partition `p`, led here, is beyond this process's share (its highest partitions go first). */
  const beyondShare = (p: number) => led.size > share() && [...led].sort((a, b) => a - b).indexOf(p) >= share()
  /** Counts this process among the live projectors and reads how many there are (on failure: as before). */
  const announce = redis.use("metrics projectors", (c) => c.eval(ANNOUNCE, 1, projectorsKey, consumer, leaseMs)).pipe(
    Effect.map((live) => {
      liveProjectors = Number(live)
    }),
    Effect.catch((e) => Effect.logWarning(`metrics projector: ${e.message}; counting the projectors again next round`))
  )
  /** Keeps this process counted among the live projectors while it runs; removes it on a clean stop. */
  const announceWhileRunning = Effect.gen(function*() {
    yield* Effect.addFinalizer(() => Effect.ignore(redis.use("metrics projectors", (c) => c.zrem(projectorsKey, consumer))))
    yield* announce
    yield* Effect.forkScoped(
      announce.pipe(Effect.delay(`${Math.max(1, Math.round(leaseMs / 4))} millis`), Effect.forever)
    )
  })

  /** Follows partition `p`'s log while this process holds its lease and it is within its share; then returns. */
  const lead = (p: number) =>
    Effect.gen(function*() {
      led.add(p)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => led.delete(p)).pipe(
          Effect.andThen(Effect.ignore(redis.use("metrics lease", (c) => c.eval(DROP_LEASE, 1, pk(p).projectorLease, consumer))))
        )
      )
      const conn = yield* redis.dedicated(`projector:${p}`)
      seen.delete(p) // another holder may have moved it since this process last led
      yield* drainOwnPending(p)
      yield* adoptOrphans(p)
      yield* catchUpToEnd(p)
      let lastAdoption = Date.now()
      // The lease is renewed a few times per time to live, not per read: under load a read comes every few ms.
      let renewedAt = Date.now()
      while (true) {
        if (Date.now() - renewedAt >= leaseMs / 4) {
          if (beyondShare(p) || !(yield* holdLease(p))) return
          renewedAt = Date.now()
        }
        const started = Date.now()
        const result = yield* poll(p, { conn, blockMs })
        const rest = pollIntervalMs - (Date.now() - started)
        if (result.delivered > 0 && result.delivered < batchSize && rest > 0) yield* Effect.sleep(rest)
        if (result.delivered === 0 && Date.now() - lastAdoption > orphanIdleMs) {
          yield* adoptOrphans(p)
          yield* catchUpToEnd(p)
          lastAdoption = Date.now()
        }
      }
    }).pipe(Effect.scoped)

  /** Whether trying again soon can cure a failure: Redis unreachable or refusing for now, a log or group deleted. */
  const transient = (e: ProjectorError) => e._tag === "RedisError" && (e.isRetryable || e.message.includes("NOGROUP"))

  /**
   * Stands by until this process holds partition `p`'s lease (taking it only while under its share), leads
   * while it does, and stands by again. It never gives up: a transient failure is tried again every second;
   * any other (a corrupt entry, a failing script, commits that keep conflicting) is logged as an error and
   * stalls this partition only, tried again with a backoff growing to a minute, so it resumes by itself once
   * the cause is gone (its lease is dropped meanwhile, so another process may try).
   */
  const follow = (p: number) =>
    Effect.gen(function*() {
      if (led.size < share() && (yield* holdLease(p))) yield* lead(p)
      else yield* Effect.sleep(Math.max(1, Math.round(leaseMs / 2)))
    }).pipe(
      Effect.forever,
      Effect.tapError((e) =>
        transient(e)
          ? Effect.logWarning(`metrics projector, partition ${p}: ${e.message}`)
          : Effect.logError(`metrics projector, partition ${p} stalled (trying again later): ${e.message}`)
      ),
      Effect.retry({ schedule: Schedule.spaced("1 second"), while: transient }),
      Effect.retry(Schedule.min([Schedule.exponential("1 second"), Schedule.spaced("1 minute")]))
    )

  const run: Effect.Effect<never, ProjectorError, Scope.Scope> = Effect.andThen(
    announceWhileRunning,
    Effect.flatMap(Effect.forEach(partitions, follow, { concurrency: "unbounded", discard: true }), () => Effect.never)
  )

  const catchUp = (o?: { readonly count?: number }) =>
    Effect.gen(function*() {
      let total = 0
      for (const p of allPartitions(keyspace)) {
        yield* drainOwnPending(p)
        while (true) {
          const r = yield* poll(p, { count: o?.count ?? batchSize })
          total += r.applied
          if (r.delivered === 0) break
        }
        total += yield* catchUpToEnd(p)
      }
      return total
    })

  // -------------------------------------------------------------------------------------------------------
  // Reading stored state, rebuild, verify

  const scanKeys = (pattern: string) =>
    redis.use("metrics scan", async (c) => {
      const keys: Array<string> = []
      for (const node of masters(c)) {
        let cursor = "0"
        do {
          const [next, batch] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000)
          keys.push(...batch)
          cursor = next
        } while (cursor !== "0")
      }
      return [...new Set(keys)]
    })

  /**
   * Index a set written before the bucket index existed (found by SCAN, once): each bucket with the second its
   * hash expires, then the mark that the index is complete. A bucket a commit writes meanwhile indexes itself.
   */
  const backfillIndex = (p: number, set: string, bucketKeys: ReadonlyArray<string>) =>
    redis.use("metrics index backfill", async (c) => {
      const keys = mk(p, set)
      const expireTimes = bucketKeys.length === 0 ? [] : ((await c.pipeline(bucketKeys.map((k) => ["pexpiretime", k])).exec()) ?? [])
      const entries: Array<string> = []
      let last = 0 // the last hash to expire (ms since the epoch); Infinity: one never does
      bucketKeys.forEach((k, i) => {
        const at = Number(expireTimes[i]![1])
        if (at === -2) return // expired since the SCAN
        last = Math.max(last, at === -1 ? Infinity : at)
        entries.push(at === -1 ? "+inf" : String(Math.ceil(at / 1000)), k.slice(keys.bucketPrefix.length))
      })
      const write = c.multi().zadd(keys.bucketIndex, ...entries, "+inf", BUCKET_INDEX_COMPLETE)
      if (last === 0 && metricsOptions.retentionSeconds > 0) write.expire(keys.bucketIndex, metricsOptions.retentionSeconds)
      else if (last !== Infinity && last > 0) write.pexpireat(keys.bucketIndex, last)
      await write.exec()
    })

  /**
   * The bucket hashes of a set: its index's members, O(buckets). A set with no checkpoint has no buckets but
   * those its index lists (its first commit marks the index complete); one older than its index is indexed first.
   */
  const bucketKeysOf = (p: number, set: string) =>
    Effect.gen(function*() {
      const keys = mk(p, set)
      const [ids, checkpoint] = yield* redis.use("metrics bucket index", async (c) => {
        const replies = (await c.multi().zrange(keys.bucketIndex, "0", "-1").hget(pk(p).checkpoints, keys.checkpointField).exec()) ?? []
        return replies.map(([err, v]) => {
          if (err) throw err
          return v
        }) as [Array<string>, string | null]
      })
      if (ids.includes(BUCKET_INDEX_COMPLETE) || checkpoint === null) {
        return ids.filter((id) => id !== BUCKET_INDEX_COMPLETE).map((id) => keys.bucketPrefix + id)
      }
      const found = yield* scanKeys(keys.bucketPattern)
      yield* backfillIndex(p, set, found)
      return found
    })

  /**
   * A key set's stored state: the buckets its index lists, and also those of `alsoIds` (bucket ids a fold of the
   * log produces: read by name, so a bucket an earlier release wrote without indexing it is not missed).
   */
  const readState = (p: number, set = "live", alsoIds: Iterable<string> = []) =>
    Effect.gen(function*() {
      const keys = mk(p, set)
      const bucketKeys = [...new Set([...yield* bucketKeysOf(p, set), ...[...alsoIds].map((id) => keys.bucketPrefix + id)])]
      return yield* redis.use("metrics read state", async (c) => {
        const pipeline = c.pipeline()
        pipeline.hget(pk(p).checkpoints, keys.checkpointField)
        pipeline.hgetall(keys.open)
        for (const k of bucketKeys) pipeline.hgetall(k)
        const replies = (await pipeline.exec()) ?? []
        const values = replies.map(([err, v]) => {
          if (err) throw err
          return v
        })
        const buckets = new Map<string, Bucket>()
        bucketKeys.forEach((k, i) => {
          const h = values[2 + i] as Record<string, string>
          if (Object.keys(h).length > 0) buckets.set(k.slice(keys.bucketPrefix.length), recordOfNumbers(h))
        })
        const open = new Map<string, OpenTask>()
        for (const [id, s] of Object.entries(values[1] as Record<string, string>)) {
          if (id !== MEMORY_ANCHOR) open.set(id, decodeOpenTask(s))
        }
        return { checkpoint: (values[0] as string | null) ?? "", state: { buckets, open } } satisfies StoredState
      })
    })

  /** Folds a partition's log from its start up to `upTo` in memory; returns the state and entries read. */
  const foldLog = (p: number, upTo: string) =>
    Effect.gen(function*() {
      let state: MetricsState = emptyState
      let after = ""
      let entries = 0
      while (true) {
        const read = yield* readLog(p, after, upTo, 1000)
        if (read.raw.length === 0) return { state, entries }
        state = foldEnvelopes(metricsOptions, read.entries, state)
        entries += read.entries.length
        after = read.raw[read.raw.length - 1]![0]
      }
    })

  const lastLogId = (p: number) =>
    redis.use("metrics xrevrange", async (c) => {
      const raw = (await c.call("XREVRANGE", pk(p).events, "+", "-", "COUNT", 1)) as Array<RawEntry>
      return raw[0]?.[0] ?? ""
    })

  /**
   * `-Infinity` while the log is complete (nothing ever trimmed or deleted). Once it has been trimmed:
   * the start of the first bucket after the log's first entry (`Infinity` if the log is empty), from
   * which the log still gives exact *counters*; latencies may pair with events that are gone.
   */
  const trimmedFloor = (p: number) =>
    Effect.gen(function*() {
      const info = yield* redis.use("metrics xinfo stream", async (c) => {
        try {
          return (await c.call("XINFO", "STREAM", pk(p).events)) as Array<unknown>
        } catch (err) {
          if (String(err).includes("no such key")) return []
          throw err
        }
      })
      const field = (name: string) => {
        const i = info.indexOf(name)
        return i < 0 ? undefined : info[i + 1]
      }
      // Every entry ever added is still there (XTRIM does not move max-deleted-entry-id; this counts both).
      if (info.length === 0 || Number(field("entries-added")) === Number(field("length"))) return -Infinity
      const first = field("first-entry") as RawEntry | null | undefined
      const json = first ? entryJson(first[1]) : undefined
      if (first == null || json === undefined) return Infinity
      const facts = yield* Effect.fromResult(decodeLogFacts(json))
      return bucketStart(bucketSeconds, facts.at) + bucketSeconds
    })

  /**
   * Writes buckets into a key set in chunks, each through the commit script guarded by `expected`
   * (nothing is written once the checkpoint moves); the last chunk sets the checkpoint to `checkpoint`
   * unless that is "" or `expected`. `replace` empties each listed bucket first (an empty one is deleted)
   * and, when `memory` is given, the memory hash. `false` when the checkpoint moved.
   */
  const writeState = (
    p: number,
    set: string,
    buckets: ReadonlyArray<readonly [string, Bucket]>,
    memory: ReadonlyArray<string> | undefined,
    expected: string,
    checkpoint: string,
    replace: boolean
  ) =>
    Effect.gen(function*() {
      const keys = mk(p, set)
      const chunks = Math.max(1, Math.ceil(buckets.length / REBUILD_CHUNK))
      for (let i = 0; i < chunks; i++) {
        const chunk = buckets.slice(i * REBUILD_CHUNK, (i + 1) * REBUILD_CHUNK)
        const last = i === chunks - 1
        const mode = !replace ? "add" : i === 0 && memory !== undefined ? "replace+memory" : "replace"
        const reply = yield* redis.use("metrics rebuild write", () =>
          applyScript(
            4 + chunk.length,
            pk(p).checkpoints,
            keys.open,
            pk(p).events,
            keys.bucketIndex,
            ...chunk.map(([id]) => {
              const { agent, startSeconds } = parseBucketId(id)
              return keys.bucket(agent, startSeconds)
            }),
            keys.checkpointField,
            expected,
            last && checkpoint !== expected ? checkpoint : "",
            metricsOptions.retentionSeconds,
            mode,
            JSON.stringify(chunk.map(([, b]) => Object.entries(b).flatMap(([f, n]) => [f, String(n)]))),
            JSON.stringify(i === 0 ? memory ?? [] : []),
            "",
            keys.bucketPrefix,
            BUCKET_INDEX_COMPLETE
          ))
        if ((reply as Array<string>)[0] !== "ok") return false
      }
      return true
    })

  const memoryOf = (state: MetricsState) => [...state.open].flatMap(([id, t]) => [id, encodeOpenTask(t)])

  const clearSet = (p: number, set: string) =>
    Effect.gen(function*() {
      const keys = mk(p, set)
      const bucketKeys = yield* bucketKeysOf(p, set)
      yield* redis.use("metrics clear set", async (c) => {
        const pipeline = c.pipeline()
        for (const k of bucketKeys) pipeline.del(k)
        pipeline.del(keys.bucketIndex)
        pipeline.del(keys.open)
        pipeline.hdel(pk(p).checkpoints, keys.checkpointField)
        await pipeline.exec()
      })
    })

  /** Rebuilds the live set of a partition up to its checkpoint, against a running projector. */
  const rebuildLive = (p: number) =>
    Effect.gen(function*() {
      if ((yield* trimmedFloor(p)) !== -Infinity) return yield* new LogTrimmed({ partition: p })
      let attempts = 0
      while (true) {
        const checkpoint = yield* getCheckpoint(p)
        const { state, entries } = checkpoint === "" ? { state: emptyState, entries: 0 } : yield* foldLog(p, checkpoint)
        const live = yield* readState(p, "live", state.buckets.keys())
        const writes: Array<readonly [string, Bucket]> = [...state.buckets]
        // Live buckets the log does not produce are removed.
        for (const id of live.state.buckets.keys()) if (!state.buckets.has(id)) writes.push([id, {}])
        if (
          live.checkpoint === checkpoint &&
          (yield* writeState(p, "live", writes, memoryOf(state), checkpoint, checkpoint, true))
        ) {
          return { partition: p, checkpoint, entries, buckets: state.buckets.size, openTasks: state.open.size }
        }
        if (++attempts >= MAX_STALE_COMMITS) return yield* new ProjectionConflict({ partition: p, checkpoint })
      }
    })

  /** Clears a key set of a partition and fills it from the whole log (up to its current end). */
  const rebuildInto = (p: number, set: string) =>
    Effect.gen(function*() {
      yield* clearSet(p, set)
      const upTo = yield* lastLogId(p)
      const { state, entries } = upTo === "" ? { state: emptyState, entries: 0 } : yield* foldLog(p, upTo)
      yield* writeState(p, set, [...state.buckets], memoryOf(state), "", upTo, false)
      return { partition: p, checkpoint: upTo, entries, buckets: state.buckets.size, openTasks: state.open.size }
    })

  const rebuild = (o?: { readonly into?: string }) =>
    Effect.gen(function*() {
      const set = o?.into ?? "rebuild"
      if (!/^[a-z0-9-]+$/.test(set)) return yield* Effect.die(new Error(`invalid metrics key set name: ${set}`))
      const partitions = yield* Effect.forEach(
        allPartitions(keyspace),
        (p) => set === "live" ? rebuildLive(p) : rebuildInto(p, set)
      )
      return { set, partitions } satisfies RebuildReport
    })

  const verify = Effect.gen(function*() {
    const differences: Array<Difference> = []
    const checkpoints: Array<string> = []
    for (const p of allPartitions(keyspace)) {
      let attempts = 0
      while (true) {
        const checkpoint = yield* getCheckpoint(p)
        const floor = yield* trimmedFloor(p)
        const complete = floor === -Infinity
        const rebuilt = checkpoint === "" ? emptyState : (yield* foldLog(p, checkpoint)).state
        const live = yield* readState(p, "live", rebuilt.buckets.keys())
        // The live state only changes together with its checkpoint: unchanged checkpoint, consistent read.
        if (live.checkpoint !== checkpoint) {
          if (++attempts >= MAX_STALE_COMMITS) return yield* new ProjectionConflict({ partition: p, checkpoint })
          continue
        }
        checkpoints.push(checkpoint)
        for (const id of new Set([...live.state.buckets.keys(), ...rebuilt.buckets.keys()])) {
          if (parseBucketId(id).startSeconds < floor) continue
          const l = live.state.buckets.get(id)
          const r = rebuilt.buckets.get(id)
          const same = complete
            ? l !== undefined && r !== undefined && bucketEquals(l, r)
            : bucketEquals(countersOf(l ?? {}), countersOf(r ?? {}))
          if (!same) {
            differences.push({ partition: p, kind: "bucket", id, live: l, rebuilt: r })
          }
        }
        if (complete) {
          for (const id of new Set([...live.state.open.keys(), ...rebuilt.open.keys()])) {
            const l = live.state.open.get(id)
            const r = rebuilt.open.get(id)
            if (l === undefined || r === undefined || !openEquals(l, r)) {
              differences.push({ partition: p, kind: "open", id, live: l, rebuilt: r })
            }
          }
        }
        break
      }
    }
    return { equal: differences.length === 0, checkpoints, differences } satisfies VerifyReport
  })

  // -------------------------------------------------------------------------------------------------------
  // Timeline

  const readBuckets = (query: TimelineQuery) =>
    Effect.gen(function*() {
      const { from, to } = query
      if (!(to >= from)) return yield* new TimelineRangeInvalid({ from, to, reason: "`to` is before `from`" })
      const first = bucketStart(bucketSeconds, from)
      const starts: Array<number> = []
      for (let s = first; s * 1000 < to; s += bucketSeconds) {
        if (starts.length >= MAX_TIMELINE_BUCKETS) {
          return yield* new TimelineRangeInvalid({
            from,
            to,
            reason: `more than ${MAX_TIMELINE_BUCKETS} buckets of ${bucketSeconds} s`
          })
        }
        starts.push(s)
      }
      const agent = query.agent ?? ALL_AGENTS
      // A bucket hash expires `retentionSeconds` after its last write, and a projector that is not stalled
      // writes it within a minute of its end: the older ones are gone and are not read (they read as zero). A
      // 24 h window with the default 2 h retention reads 122 buckets per partition, not 1,440.
      const now = yield* Clock.currentTimeMillis
      const gone = metricsOptions.retentionSeconds > 0
        ? now / 1000 - metricsOptions.retentionSeconds - bucketSeconds - EXPIRED_BUCKET_MARGIN_SECONDS
        : -Infinity
      const skipped = starts.filter((s) => s < gone).length
      const stored = starts.slice(skipped)
      const perPartition = yield* Effect.forEach(allPartitions(keyspace), (p) =>
        redis.use("metrics timeline", async (c) => {
          const pipeline = c.pipeline()
          for (const s of stored) pipeline.hgetall(mk(p).bucket(agent, s))
          return ((await pipeline.exec()) ?? []).map(([err, h]) => {
            if (err) throw err
            return recordOfNumbers(h as Record<string, string>)
          })
        }), { concurrency: 16 })
      return starts.map((start, i) => ({
        agent,
        start,
        bucket: i < skipped ? {} : perPartition.reduce((sum, hashes) => addBuckets(sum, hashes[i - skipped] ?? {}), {})
      }))
    })

  const readTimeline = (query: TimelineQuery) =>
    Effect.map(
      readBuckets(query),
      (buckets) => buckets.map((b) => toTimelinePoint(bucketSeconds, b.agent, b.start, b.bucket))
    )

  /** The first entry of partition `p`'s log after its live checkpoint: its time (ms), or undefined. One round trip. */
  const firstUnprojected = (p: number) =>
    redis.use("metrics status", async (c) => {
      const id = (await c.eval(FIRST_UNPROJECTED, 2, pk(p).checkpoints, pk(p).events, mk(p).checkpointField)) as string | null
      return id === null ? undefined : Number(id.split("-")[0])
    })

  const status = Effect.gen(function*() {
    const live = yield* redis.use("metrics status", (c) => c.eval(LIVE_PROJECTORS, 1, projectorsKey))
    const firsts = yield* Effect.forEach(partitions, firstUnprojected, { concurrency: 8 })
    const oldest = Math.min(...firsts.filter((t) => t !== undefined))
    const now = yield* Clock.currentTimeMillis
    return {
      liveProjectors: Number(live),
      oldestUnprojectedAgeMs: Number.isFinite(oldest) ? Math.max(0, now - oldest) : null
    } satisfies ProjectionStatus
  })

  return MetricsProjector.of({
    keyspace,
    options: metricsOptions,
    consumer,
    checkpointField: mk(0).checkpointField,
    run,
    poll,
    apply,
    catchUp,
    readState: (p, set) => readState(p, set),
    rebuild,
    verify,
    readBuckets,
    readTimeline,
    status
  })
})
