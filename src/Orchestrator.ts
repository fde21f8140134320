/**
 * The composition root and the Promise facade, in the Python factorial's shape:
 * `new Orchestrator({...})`, `registerRunner({ agent, agentWorkerConfig, maintenanceWorkerConfig })`,
 * `run()` / `stop()`, and the task API (`enqueueTask`, `getTaskStatus`, `getTaskData`, `cancelTask`,
 * `steerTask`, `getTaskHistory`). Effect users take `orchestratorLayer(options)` and `runRunners(...)`.
 *
 * Only this module reads options and the environment. It also guards the namespace: its partition
 * count is fixed when first used, and a different one is refused with `InvalidConfig`.
 */
import { Cause, Effect, Exit, Layer, ManagedRuntime, Scope } from "effect"
import { Gauges } from "../projections/Gauges.ts"
import { metricsOptionsFromTimeline } from "../projections/MetricsBuckets.ts"
import { MetricsProjector } from "../projections/Projector.ts"
import type { Keyspace } from "../streams/Keys.ts"
import { namespaceKeys, PROJECTOR_GROUP } from "../streams/Keys.ts"
import { RedisClient, type RedisOptions } from "../streams/RedisClient.ts"
import type { RedisError } from "../streams/StreamError.ts"
import type { Envelope, TaskStatus } from "../streams/TaskEvent.ts"
import type { ApiKeys, EnqueueTarget, RunnableAgent, Task } from "./Agent.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig, MetricsTimelineConfig, ObservabilityConfig } from "./Config.ts"
import { ControlChannel } from "./ControlChannel.ts"
import { InvalidConfig } from "./Errors.ts"
import { runMaintenance } from "./Maintenance.ts"
import { type BatchData, type BatchOptions, type EnqueueOptions, TaskClient } from "./TaskClient.ts"
import type { BatchEnvelope } from "../streams/BatchEvent.ts"
import { type TaskData, TaskStore } from "./TaskStore.ts"
import { makeWorkerId, runWorkerPool } from "./Worker.ts"
import { type AppOptions, buildApp } from "./http/App.ts"
import { liveEvents, type LiveFilter, type LiveItemOf } from "./LiveFeed.ts"
import { type LogHub, makeLogHub } from "./LogHub.ts"
import { checkEmitLimits, type EmitHub, type EmitLimits, makeEmitHub, makeEmitPublisher } from "./LiveEmit.ts"
import type { FastifyInstance } from "fastify"

export interface OrchestratorOptions {
  /** `redis://…`; default: env REDIS_URL, else redisHost/redisPort/redisDb. */
  readonly redisUrl?: string
  /** Default: env REDIS_HOST, else "localhost". */
  readonly redisHost?: string
  readonly redisPort?: number
  readonly redisDb?: number
  readonly redisPassword?: string
  /**
   * The most connections to Redis this process may need to start its runners: one shared, one subscriber, one
   * blocking reader per agent and partition, and (unless `projectMetrics` is false) one per partition its
   * metrics projector may lead. `start()` refuses with `InvalidConfig` a registration that needs more, rather
   * than opening them. Live feeds open up to 4 more while followed (docs/scaling.md). Default: no bound.
   */
  readonly redisMaxConnections?: number
  /** Redis Cluster seed nodes; when given, the other redis* options are ignored. */
  readonly clusterNodes?: ReadonlyArray<{ readonly host: string; readonly port: number }>
  /** Key namespace; default "factorial". */
  readonly namespace?: string
  /** Partitions of the namespace (fixed once the namespace is used); default 1. */
  readonly partitions?: number
  /**
   * API keys for the LLM agents this orchestrator runs: an agent whose `client` names no `apiKey` uses the one
   * of its provider (`openai`, `xai`); without one here, the provider's environment variable (OPENAI_API_KEY,
   * XAI_API_KEY). An agent's own key always wins.
   */
  readonly openaiApiKey?: string
  readonly xaiApiKey?: string
  readonly observabilityConfig?: ObservabilityConfig
  readonly metricsConfig?: MetricsTimelineConfig
  /** Bounds on the events turns emit (`ctx.emit`): size and rate per task; see `EmitLimits` (ADR 0010). */
  readonly emitLimits?: Partial<EmitLimits>
  /**
   * Whether this process keeps the metrics timeline current (default true): it then runs a follow loop that
   * leads its share of the partitions' logs (ADR 0015). Set false in worker processes when other processes
   * project (the one serving the dashboard, say), so that the projection never shares the turns' event loop:
   * in the bench, one slot ran 10-20 % faster without it (ADR 0016). With no process projecting, the metrics
   * stall; the dashboard and `/metrics` show it (`factorial_metrics_unprojected_age_seconds`).
   */
  readonly projectMetrics?: boolean
}

export interface RunnerRegistration {
  readonly agent: RunnableAgent
  readonly agentWorkerConfig?: AgentWorkerConfig
  readonly maintenanceWorkerConfig?: MaintenanceWorkerConfig
}

interface Runner {
  readonly agent: RunnableAgent
  readonly workerConfig: AgentWorkerConfig
  readonly maintenanceConfig: MaintenanceWorkerConfig
}

const NamespacePattern = /^[A-Za-z0-9_.-]{1,64}$/

/** Validated connection and keyspace settings. */
export const resolveOptions = (options: OrchestratorOptions): { redis: RedisOptions; keyspace: Keyspace } => {
  const namespace = options.namespace ?? "factorial"
  if (!NamespacePattern.test(namespace)) {
    throw new InvalidConfig({ message: `namespace must be 1-64 of [A-Za-z0-9_.-], got ${JSON.stringify(namespace)}` })
  }
  const partitions = options.partitions ?? 1
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > 1024) {
    throw new InvalidConfig({ message: `partitions must be an integer from 1 to 1024, got ${partitions}` })
  }
  if (options.redisPort !== undefined && (!Number.isInteger(options.redisPort) || options.redisPort <= 0)) {
    throw new InvalidConfig({ message: `redisPort must be a positive integer, got ${options.redisPort}` })
  }
  const max = options.redisMaxConnections
  if (max !== undefined && (!Number.isInteger(max) || max < 2)) {
    throw new InvalidConfig({ message: `redisMaxConnections must be an integer of at least 2, got ${max}` })
  }
  const badLimits = options.emitLimits === undefined ? undefined : checkEmitLimits(options.emitLimits)
  if (badLimits !== undefined) throw new InvalidConfig({ message: badLimits })
  const url = options.redisUrl ?? (options.redisHost === undefined ? process.env.REDIS_URL : undefined)
  return {
    keyspace: { namespace, partitions },
    redis: {
      url,
      host: options.redisHost ?? process.env.REDIS_HOST ?? "localhost",
      port: options.redisPort ?? 6379,
      db: options.redisDb ?? 0,
      password: options.redisPassword,
      clusterNodes: options.clusterNodes
    }
  }
}

/** Fixes the namespace's partition count on first use and refuses a different one later. */
const guardNamespace = (keyspace: Keyspace) =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    const meta = namespaceKeys(keyspace).meta
    yield* redis.use("namespace meta", (c) => c.hsetnx(meta, "partitions", keyspace.partitions))
    const stored = Number(yield* redis.use("namespace meta", (c) => c.hget(meta, "partitions")))
    if (stored !== keyspace.partitions) {
      return yield* new InvalidConfig({
        message: `namespace ${keyspace.namespace} has ${stored} partitions; it cannot be opened with ${keyspace.partitions}`
      })
    }
  })

/** The client services (TaskClient, TaskStore, RedisClient) for a namespace. */
export const orchestratorLayer = (
  options: OrchestratorOptions,
  maxRetries: (agent: string) => number = () => AgentWorkerConfig.defaults.maxRetries
) => {
  const { redis, keyspace } = resolveOptions(options)
  const base = TaskStore.layer(keyspace).pipe(
    Layer.provideMerge(Layer.effectDiscard(guardNamespace(keyspace)).pipe(Layer.provideMerge(RedisClient.layer(redis))))
  )
  const metrics = metricsOptionsFromTimeline(options.metricsConfig ?? new MetricsTimelineConfig())
  return Layer.mergeAll(
    TaskClient.layer({ maxRetries }),
    ControlChannel.layer(keyspace),
    MetricsProjector.layer(keyspace, metrics),
    Gauges.layer(keyspace)
  ).pipe(Layer.provideMerge(base))
}

/**
 * Runs worker pools and maintenance for the runners until the scope closes (graceful stop). What turns emit
 * (`ctx.emit`) is published on the namespace's emit channel, within `emitLimits` (src/LiveEmit.ts). The
 * metrics projector runs beside them unless `projectMetrics` is false.
 */
export const runRunners = (
  runners: ReadonlyArray<Runner>,
  workerId = makeWorkerId(),
  options: {
    readonly emitLimits?: Partial<EmitLimits> | undefined
    readonly projectMetrics?: boolean | undefined
    /** Handed to every turn (`TurnContext.apiKeys`): the keys LLM agents use when their client names none. */
    readonly apiKeys?: ApiKeys | undefined
  } = {}
) =>
  Effect.gen(function*() {
    const maintenanceConfig = runners[0]?.maintenanceConfig ?? new MaintenanceWorkerConfig()
    const projector = yield* MetricsProjector
    const maintenance = yield* runMaintenance({
      agents: runners.map((r) => ({ name: r.agent.name, heartbeatTimeout: r.workerConfig.heartbeatTimeout })),
      config: maintenanceConfig,
      workerId,
      projectorGroup: PROJECTOR_GROUP,
      projectorConsumer: projector.consumer,
      projectorCheckpointField: projector.checkpointField
    })
    // Metrics: safe in every process (a commit is refused if another projector moved the checkpoint).
    if (options.projectMetrics !== false) {
      yield* Effect.forkScoped(
        projector.run.pipe(Effect.catchCause((cause) => Effect.logError("metrics projector stopped", cause)))
      )
    }
    const maxRetries = (agent: string) =>
      runners.find((r) => r.agent.name === agent)?.workerConfig.maxRetries ?? AgentWorkerConfig.defaults.maxRetries
    const redis = yield* RedisClient
    const store = yield* TaskStore
    const services = yield* Effect.context<never>()
    const emits = makeEmitPublisher({
      conn: redis.conn,
      keyspace: store.keyspace,
      limits: options.emitLimits,
      warn: (message) => void Effect.runForkWith(services)(Effect.logWarning(message))
    })
    yield* Effect.addFinalizer(() => Effect.sync(emits.close))
    for (const r of runners) {
      yield* runWorkerPool({
        agent: r.agent,
        config: r.workerConfig,
        workerId,
        onBackoff: maintenance.poke,
        onEmit: emits.forAgent(r.agent.name),
        maxRetries,
        ...(options.apiKeys === undefined ? {} : { apiKeys: options.apiKeys })
      })
    }
    return { workerId }
  })

/** What an orchestrator's runtime provides to the effects it runs (`runEffect`). */
export type Services = TaskClient | TaskStore | RedisClient | ControlChannel | MetricsProjector | Gauges

/** Runs an effect, rejecting with the typed error itself (not a wrapper). */
const runWith = <A, E>(runtime: ManagedRuntime.ManagedRuntime<Services, unknown>, effect: Effect.Effect<A, E, Services>) =>
  runtime.runPromiseExit(effect).then((exit) => {
    if (Exit.isSuccess(exit)) return exit.value
    throw Cause.squash(exit.cause)
  })

export class Orchestrator {
  readonly options: OrchestratorOptions
  readonly namespace: string
  private readonly runners = new Map<string, Runner>()
  private runtime: ManagedRuntime.ManagedRuntime<Services, unknown> | undefined
  private clientOf: { readonly runtime: ManagedRuntime.ManagedRuntime<Services, unknown>; readonly service: Promise<TaskClient["Service"]> } | undefined
  private running: { scope: Scope.Closeable; done: Promise<void>; resolve: () => void } | undefined
  private server: { app: FastifyInstance; url: string } | undefined
  /** The shared reader of the logs and subscription to the emit channel for `subscribe` (made with the first one). */
  private logHub: LogHub | undefined
  private emitHub: EmitHub | undefined

  constructor(options: OrchestratorOptions = {}) {
    const { keyspace } = resolveOptions(options)
    this.options = options
    this.namespace = keyspace.namespace
  }

  /** Registers an agent to be worked on by `run()` in this process. */
  registerRunner(registration: RunnerRegistration): this {
    if (this.runners.has(registration.agent.name)) {
      throw new InvalidConfig({ message: `an agent named ${registration.agent.name} is already registered` })
    }
    this.runners.set(registration.agent.name, {
      agent: registration.agent,
      workerConfig: registration.agentWorkerConfig ?? new AgentWorkerConfig(),
      maintenanceConfig: registration.maintenanceWorkerConfig ?? new MaintenanceWorkerConfig()
    })
    return this
  }

  get agents(): ReadonlyArray<RunnableAgent> {
    return [...this.runners.values()].map((r) => r.agent)
  }

  private getRuntime() {
    this.runtime ??= ManagedRuntime.make(
      orchestratorLayer(
        this.options,
        (agent) => this.runners.get(agent)?.workerConfig.maxRetries ?? AgentWorkerConfig.defaults.maxRetries
      )
    )
    return this.runtime
  }

  /** Runs an Effect against this orchestrator's services. */
  runEffect<A, E>(effect: Effect.Effect<A, E, Services>): Promise<A> {
    return runWith(this.getRuntime(), effect)
  }

  /**
   * Starts the registered workers and maintenance; resolves when started. `run()` does the same and
   * resolves only after `stop()` (or SIGINT/SIGTERM when `handleSignals` is true). A `stop()` while it is
   * starting wins: it resolves then, with everything stopped, instead of failing with the interruption.
   */
  async start(): Promise<void> {
    if (this.running !== undefined) return
    if (this.runners.size === 0) throw new InvalidConfig({ message: "no runner registered: call registerRunner first" })
    const max = this.options.redisMaxConnections
    const partitions = this.options.partitions ?? 1
    const projectorReaders = this.options.projectMetrics === false ? 0 : partitions
    const needed = 2 + this.runners.size * partitions + projectorReaders
    if (max !== undefined && needed > max) {
      throw new InvalidConfig({
        message: `${this.runners.size} agents on ${partitions} partitions need up to ${needed} Redis connections ` +
          `(2 + a reader per agent and partition + ${projectorReaders} for the metrics projector), ` +
          `more than redisMaxConnections (${max})`
      })
    }
    const scope = Scope.makeUnsafe()
    let resolve!: () => void
    const done = new Promise<void>((r) => (resolve = r))
    const running = { scope, done, resolve }
    this.running = running
    try {
      await this.runEffect(
        Scope.provide(scope)(runRunners([...this.runners.values()], undefined, {
          emitLimits: this.options.emitLimits,
          projectMetrics: this.options.projectMetrics,
          apiKeys: {
            ...(this.options.openaiApiKey === undefined ? {} : { openai: this.options.openaiApiKey }),
            ...(this.options.xaiApiKey === undefined ? {} : { xai: this.options.xaiApiKey })
          }
        }))
      )
      if (this.running !== running) return // stopped while starting
      await this.startServer()
    } catch (e) {
      if (this.running !== running) return // stopped while starting: stop() closed the scope
      this.running = undefined
      await Effect.runPromise(Scope.close(scope, Exit.void))
      throw e
    }
  }

  async run(options: { readonly handleSignals?: boolean } = {}): Promise<void> {
    await this.start()
    const onSignal = () => void this.stop()
    if (options.handleSignals ?? true) {
      process.once("SIGINT", onSignal)
      process.once("SIGTERM", onSignal)
    }
    await this.running?.done
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }

  /** Starts the HTTP server when `observabilityConfig` is given and enabled. */
  async startServer(): Promise<string | undefined> {
    const config = this.options.observabilityConfig
    if (config === undefined || !config.enabled || this.server !== undefined) return this.server?.url
    const app = this.createObservabilityApp(config)
    const url = await app.listen({ host: config.host, port: config.port })
    this.server = { app, url }
    return url
  }

  /** Graceful stop: no new claims, running turns finish (or are handed back), then connections close. */
  async stop(): Promise<void> {
    const server = this.server
    this.server = undefined
    await server?.app.close()
    const running = this.running
    this.running = undefined
    if (running !== undefined) {
      await Effect.runPromise(Scope.close(running.scope, Exit.void))
      running.resolve()
    }
    const runtime = this.runtime
    this.runtime = undefined
    await runtime?.dispose()
  }

  private withClient<A, E>(f: (client: TaskClient["Service"]) => Effect.Effect<A, E>): Promise<A> {
    return this.runEffect(TaskClient.use(f))
  }

  /** The client service of the current runtime, got once per runtime (a failed build is not kept). */
  private client(): Promise<TaskClient["Service"]> {
    const runtime = this.getRuntime()
    if (this.clientOf?.runtime !== runtime) {
      const service = this.runEffect(TaskClient.use(Effect.succeed))
      this.clientOf = { runtime, service }
      service.catch(() => {
        if (this.clientOf?.service === service) this.clientOf = undefined
      })
    }
    return this.clientOf.service
  }

  /**
   * The HTTP server (dashboard, its API and live events, `/metrics`, control API), built but not
   * listening: for `inject()` or embedding. `extra` tunes the body limit and the live streams.
   */
  createObservabilityApp(
    config = this.options.observabilityConfig ?? new ObservabilityConfig(),
    extra: Pick<AppOptions, "bodyLimit" | "live" | "liveWithinMs"> = {}
  ): FastifyInstance {
    const runtime = this.getRuntime()
    return buildApp({
      // A layer failure (Redis unreachable, bad namespace) surfaces as this Exit's failure too.
      run: <A, E>(effect: Effect.Effect<A, E, Services>) => runtime.runPromiseExit(effect) as Promise<Exit.Exit<A, E>>,
      config,
      agents: () => this.agents,
      ...extra
    })
  }

  /** Where the HTTP server listens, once `start()` started it. */
  get observabilityUrl(): string | undefined {
    return this.server?.url
  }

  enqueueTask<P>(agent: EnqueueTarget<P>, task: Task<P>, options?: EnqueueOptions): Promise<string> {
    return this.client().then((c) => c.enqueuePromise(agent, task, options))
  }

  /** Enqueues many tasks in one round trip; each result says whether that task was enqueued. */
  enqueueTasks<P>(agent: EnqueueTarget<P>, tasks: ReadonlyArray<Task<P>>, options?: Omit<EnqueueOptions, "idempotencyKey">) {
    return this.withClient((c) => c.enqueueMany(agent, tasks, options))
  }

  /**
   * Enqueues tasks as a batch (one agent; the batch's owner is the first task's unless given): the batch is
   * recorded with its task ids first, then the tasks. Its progress, completion and cancellation are events of
   * the batch (`getBatchHistory`); `getBatch` reads its progress.
   */
  enqueueBatch<P>(agent: EnqueueTarget<P>, tasks: ReadonlyArray<Task<P>>, options?: BatchOptions) {
    return this.withClient((c) => c.enqueueBatch(agent, tasks, options))
  }

  /** A batch's progress: counts of its tasks' ends and its status (`active`, `completed`, `cancelled`), or null. */
  getBatch(batchId: string): Promise<BatchData | null> {
    return this.withClient((c) => c.getBatch(batchId))
  }

  getBatchHistory(batchId: string): Promise<ReadonlyArray<BatchEnvelope>> {
    return this.withClient((c) => c.getBatchHistory(batchId))
  }

  /** Cancels a batch and its unfinished tasks (their ends are still counted; the batch never completes). */
  cancelBatch(batchId: string): Promise<void> {
    return this.withClient((c) => c.cancelBatch(batchId))
  }

  getTaskStatus(taskId: string): Promise<TaskStatus> {
    return this.withClient((c) => c.getStatus(taskId))
  }

  getTaskData(taskId: string): Promise<TaskData | null> {
    return this.withClient((c) => c.getData(taskId))
  }

  getTaskHistory(taskId: string, page?: { readonly start?: number; readonly count?: number }): Promise<ReadonlyArray<Envelope>> {
    return this.withClient((c) => c.getHistory(taskId, page))
  }

  cancelTask(taskId: string): Promise<void> {
    return this.withClient((c) => c.cancel(taskId))
  }

  /**
   * Live events of this namespace as an async iterable, filtered by owner, agent, task ids or types.
   * Each event carries a `cursor`; pass the last one back to resume without gaps. Stop with `signal`
   * or by leaving the `for await` loop.
   *
   * With `emits: true` (or a list of types) the feed also yields what running turns emit (`ctx.emit`) as
   * `{ kind: "emit", emit: { taskId, agent, ownerId, type, at, data } }`: progress, not history — no cursor,
   * not replayed on resume (ADR 0010). Tell the kinds apart by `kind` (`"task"` or `"emit"`).
   *
   * The subscriptions of one orchestrator share one reader of the logs (ADR 0023) and one subscription to the emit
   * channel: many cost Redis what one does.
   */
  subscribe<F extends LiveFilter = {}>(
    filter: F = {} as F,
    options: { readonly cursor?: string; readonly signal?: AbortSignal } = {}
  ): AsyncGenerator<LiveItemOf<F>> {
    const { redis, keyspace } = resolveOptions(this.options)
    this.logHub ??= makeLogHub({ ...redis, connectionName: `factorial:subscribe-log:${keyspace.namespace}` }, keyspace)
    this.emitHub ??= makeEmitHub({ ...redis, connectionName: `factorial:subscribe-emit:${keyspace.namespace}` }, keyspace)
    return liveEvents(redis, keyspace, filter, { ...options, logHub: this.logHub, emitHub: this.emitHub })
  }

  steerTask(taskId: string, messages: ReadonlyArray<unknown>): Promise<void> {
    return this.withClient((c) => c.steer(taskId, messages))
  }

  /**
   * Delivers the result of a deferred tool call (or any deferred result a turn waits for) to a waiting task,
   * exactly once: a second delivery fails with `ResultAlreadyReceived`, one the task is not waiting for with
   * `ResultNotPending`. When it is the last one outstanding, the task is queued and its next turn gets the results.
   * `token`: the per-call token recorded with the wait item; checked when given (the HTTP route requires it).
   */
  completeDeferredTool(taskId: string, resultId: string, result: unknown, options: { readonly token?: string } = {}): Promise<void> {
    return this.withClient((c) => c.deliverResult(taskId, resultId, result, options.token))
  }
}

export type { RedisError }
