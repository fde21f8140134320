/**
 * The configuration classes of the public API, with the Python factorial's fields and defaults
 * (durations in seconds, camelCase names). Each constructor validates its input against a Schema and
 * throws `InvalidConfig` with every problem spelled out; a constructed config is always valid.
 */
import { Cause, Schema } from "effect"
import { InvalidConfig } from "./Errors.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const PositiveSeconds = Schema.Finite.check(Schema.isGreaterThan(0))
const NonNegativeSeconds = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

/** Decodes `{...defaults, ...input}` or throws `InvalidConfig` naming the class and the fields. */
const validate = <S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  name: string,
  input: unknown
): S["Type"] => {
  const exit = Schema.decodeUnknownExit(schema)(input, { errors: "all", onExcessProperty: "error" })
  if (exit._tag === "Success") return exit.value
  const error = Cause.squash(exit.cause)
  const message = (error instanceof Error ? error.message : String(error)).replace(/\n\s*/g, " ")
  throw new InvalidConfig({ message: `${name}: ${message}` })
}

const AgentWorkerFields = Schema.Struct({
  workers: PositiveInt,
  batchSize: PositiveInt,
  maxRetries: NonNegativeInt,
  heartbeatInterval: PositiveSeconds,
  missedHeartbeatsThreshold: PositiveInt,
  missedHeartbeatsGracePeriod: NonNegativeSeconds,
  turnTimeout: PositiveSeconds,
  backoffBase: PositiveSeconds,
  backoffMax: PositiveSeconds,
  shutdownTimeout: NonNegativeSeconds,
  checkpointDeltas: Schema.Boolean
})

/** How one agent's tasks are worked on in this process. */
export class AgentWorkerConfig {
  /** Turns of this agent run concurrently in this process. */
  readonly workers: number
  /** Queue entries read per claim. */
  readonly batchSize: number
  /** Retries per task (attempts = maxRetries + 1). */
  readonly maxRetries: number
  readonly heartbeatInterval: number
  readonly missedHeartbeatsThreshold: number
  readonly missedHeartbeatsGracePeriod: number
  /** A turn running longer is interrupted and retried. */
  readonly turnTimeout: number
  /** First backoff delay after a transient failure; doubles per retry, with jitter. */
  readonly backoffBase: number
  /** The longest backoff delay. */
  readonly backoffMax: number
  /** On stop, how long running turns may finish before they are handed back to the queue. */
  readonly shutdownTimeout: number
  /**
   * Store a turn's checkpoint as what changed in the payload (an array's new elements or a text's new characters,
   * at any depth; changed fields) instead of the whole payload, while reading the chain stays under twice the
   * payload (ADR 0018): a growing conversation's history then grows with its length, not its square. On by
   * default. During a rolling upgrade from a build that cannot read such checkpoints (one from before ADR 0018 or
   * its nested deltas), keep it `false` until no such process is left: it cannot claim or read a task that has one.
   */
  readonly checkpointDeltas: boolean

  static readonly defaults = {
    workers: 1,
    batchSize: 25,
    maxRetries: 5,
    heartbeatInterval: 5,
    missedHeartbeatsThreshold: 5,
    missedHeartbeatsGracePeriod: 5,
    turnTimeout: 120,
    backoffBase: 5,
    backoffMax: 300,
    shutdownTimeout: 10,
    checkpointDeltas: true
  }

  constructor(input: Partial<typeof AgentWorkerConfig.defaults> = {}) {
    const v = validate(AgentWorkerFields, "AgentWorkerConfig", { ...AgentWorkerConfig.defaults, ...input })
    this.workers = v.workers
    this.batchSize = v.batchSize
    this.maxRetries = v.maxRetries
    this.heartbeatInterval = v.heartbeatInterval
    this.missedHeartbeatsThreshold = v.missedHeartbeatsThreshold
    this.missedHeartbeatsGracePeriod = v.missedHeartbeatsGracePeriod
    this.turnTimeout = v.turnTimeout
    this.backoffBase = v.backoffBase
    this.backoffMax = v.backoffMax
    this.shutdownTimeout = v.shutdownTimeout
    this.checkpointDeltas = v.checkpointDeltas
  }

  /** After this long without a heartbeat a task's lease is revoked (seconds). */
  get heartbeatTimeout(): number {
    return this.heartbeatInterval * this.missedHeartbeatsThreshold + this.missedHeartbeatsGracePeriod
  }
}

const TaskTTLFields = Schema.Struct({
  completedTtl: NonNegativeSeconds,
  failedTtl: NonNegativeSeconds,
  cancelledTtl: NonNegativeSeconds,
  historyTtl: NonNegativeSeconds
})

/** How long finished tasks keep their hot data; their history has its own retention (0: forever). */
export class TaskTTLConfig {
  readonly completedTtl: number
  readonly failedTtl: number
  readonly cancelledTtl: number
  /** Seconds a history is kept after its task expired; 0 keeps it until deleted or exported. */
  readonly historyTtl: number

  static readonly defaults = { completedTtl: 3600, failedTtl: 86400, cancelledTtl: 1800, historyTtl: 7 * 86400 }

  constructor(input: Partial<typeof TaskTTLConfig.defaults> = {}) {
    const v = validate(TaskTTLFields, "TaskTTLConfig", { ...TaskTTLConfig.defaults, ...input })
    this.completedTtl = v.completedTtl
    this.failedTtl = v.failedTtl
    this.cancelledTtl = v.cancelledTtl
    this.historyTtl = v.historyTtl
  }

  ttlOf(status: "completed" | "failed" | "cancelled"): number {
    return status === "completed" ? this.completedTtl : status === "failed" ? this.failedTtl : this.cancelledTtl
  }
}

const BucketSize = Schema.Literals(["seconds", "minutes", "hours", "days"])
const bucketSeconds = { seconds: 1, minutes: 60, hours: 3600, days: 86400 } as const

const MetricsTimelineFields = Schema.Struct({
  timelineDuration: PositiveSeconds,
  bucketSize: BucketSize,
  retentionMultiplier: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1))
})

/** The metrics timeline: buckets of `bucketSize` over `timelineDuration`, kept `retentionMultiplier` × as long. */
export class MetricsTimelineConfig {
  readonly timelineDuration: number
  readonly bucketSize: "seconds" | "minutes" | "hours" | "days"
  readonly retentionMultiplier: number

  static readonly defaults = {
    timelineDuration: 3600,
    bucketSize: "minutes" as "seconds" | "minutes" | "hours" | "days",
    retentionMultiplier: 2
  }

  constructor(input: Partial<typeof MetricsTimelineConfig.defaults> = {}) {
    const v = validate(MetricsTimelineFields, "MetricsTimelineConfig", { ...MetricsTimelineConfig.defaults, ...input })
    if (v.timelineDuration / bucketSeconds[v.bucketSize] > 10_000) {
      throw new InvalidConfig({
        message: `MetricsTimelineConfig: ${v.timelineDuration}s in ${v.bucketSize} is more than 10000 buckets`
      })
    }
    this.timelineDuration = v.timelineDuration
    this.bucketSize = v.bucketSize
    this.retentionMultiplier = v.retentionMultiplier
  }

  get bucketSeconds(): number {
    return bucketSeconds[this.bucketSize]
  }
  get retentionSeconds(): number {
    return Math.ceil(this.timelineDuration * this.retentionMultiplier)
  }
}

const MaintenanceFields = Schema.Struct({
  interval: PositiveSeconds,
  workers: PositiveInt,
  maxCleanupBatch: PositiveInt,
  expiryBudget: NonNegativeSeconds,
  eventLogRetention: PositiveSeconds,
  rewriteAofAfterRestart: Schema.Boolean
})

/**
 * Maintenance: lease recovery, backoff wake-ups, TTL expiry, log trimming and the deletion of dead
 * consumers. Safe in every process.
 */
export class MaintenanceWorkerConfig {
  /** Seconds between passes (at most: wake-ups and wait deadlines are served on time). */
  readonly interval: number
  readonly workers: number
  /** Per pass and partition: entries recovered and tasks woken; tasks expired per status per batch. */
  readonly maxCleanupBatch: number
  /**
   * Seconds one pass may spend on further expiry batches once every terminal status of every partition had
   * its first one, while more tasks are past their TTL (0: one batch per status per partition per pass).
   */
  readonly expiryBudget: number
  /** How long the partition event logs keep entries (the projector's unread entries are always kept). */
  readonly eventLogRetention: number
  /**
   * Ask a Redis with an append-only file for one rewrite after it started (src/AofRewrite.ts: works around a
   * Redis 7.0 bug that can replay half of a torn transaction at the second restart after a crash).
   */
  readonly rewriteAofAfterRestart: boolean
  readonly taskTtl: TaskTTLConfig
  readonly metricsTimeline: MetricsTimelineConfig

  static readonly defaults = {
    interval: 10,
    workers: 1,
    maxCleanupBatch: 100,
    expiryBudget: 1,
    eventLogRetention: 86400,
    rewriteAofAfterRestart: true
  }

  constructor(
    input: Partial<typeof MaintenanceWorkerConfig.defaults> & {
      readonly taskTtl?: TaskTTLConfig
      readonly metricsTimeline?: MetricsTimelineConfig
    } = {}
  ) {
    const { taskTtl, metricsTimeline, ...rest } = input
    const v = validate(MaintenanceFields, "MaintenanceWorkerConfig", { ...MaintenanceWorkerConfig.defaults, ...rest })
    this.interval = v.interval
    this.workers = v.workers
    this.maxCleanupBatch = v.maxCleanupBatch
    this.expiryBudget = v.expiryBudget
    this.eventLogRetention = v.eventLogRetention
    this.rewriteAofAfterRestart = v.rewriteAofAfterRestart
    this.taskTtl = taskTtl ?? new TaskTTLConfig()
    this.metricsTimeline = metricsTimeline ?? new MetricsTimelineConfig()
  }
}

const ObservabilityFields = Schema.Struct({
  enabled: Schema.Boolean,
  host: Schema.String,
  port: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThanOrEqualTo(65535)),
  dashboardName: Schema.String,
  corsOrigins: Schema.Array(Schema.String),
  authToken: Schema.optionalKey(Schema.String.check(Schema.isMinLength(16))),
  gaugesReadEveryMs: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
})

/** The dashboard and control API server. Loopback by default; `authToken` protects actions and the API. */
export class ObservabilityConfig {
  readonly enabled: boolean
  readonly host: string
  readonly port: number
  readonly dashboardName: string
  readonly corsOrigins: ReadonlyArray<string>
  readonly authToken: string | undefined
  /**
   * The server reads the gauges (counts by status, queues, workers) at most this often, ms, and answers the
   * requests meanwhile from that read (ADR 0024); 0 reads them on every request.
   */
  readonly gaugesReadEveryMs: number

  static readonly defaults = {
    enabled: true,
    host: "127.0.0.1",
    port: 8080,
    dashboardName: "Factorial Dashboard",
    corsOrigins: [] as ReadonlyArray<string>,
    gaugesReadEveryMs: 1_000
  }

  constructor(input: Partial<typeof ObservabilityConfig.defaults> & { readonly authToken?: string } = {}) {
    const v = validate(ObservabilityFields, "ObservabilityConfig", { ...ObservabilityConfig.defaults, ...input })
    this.enabled = v.enabled
    this.host = v.host
    this.port = v.port
    this.dashboardName = v.dashboardName
    this.corsOrigins = v.corsOrigins
    this.authToken = v.authToken
    this.gaugesReadEveryMs = v.gaugesReadEveryMs
  }
}
