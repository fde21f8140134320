/**
 * The commands of `factorial-ts`: each a spec (arguments, flags, help) and a handler that returns an
 * exit code. Handlers are thin: the work is done by the library (TaskStore, src/audit), so the CLI and
 * the API cannot disagree.
 *
 * Invariant: stdout carries only the command's result (human text, or JSON with `--json`: one document,
 * or JSON Lines for streams); progress, notes and errors go to stderr.
 */
import { randomUUID } from "node:crypto"
import { createReadStream, existsSync } from "node:fs"
import { createInterface } from "node:readline"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { Clock, Effect, Schema, Stream } from "effect"
import { type Keyspace, partitionOf } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { deleteLibraries, libraryVersion, otherReleasesLibraries } from "../../streams/Scripts.ts"
import { RedisError, toRedisError } from "../../streams/StreamError.ts"
import { cursorNow, type LiveItem, liveEvents } from "../LiveFeed.ts"
import { makeEmitHub } from "../LiveEmit.ts"
import { AgentName, type Envelope, TaskEvent, type TaskEventTag, TaskStatus } from "../../streams/TaskEvent.ts"
import { InvalidInput, TaskNotFound } from "../Errors.ts"
import { MetricsTimelineConfig } from "../Config.ts"
import { metricsOptionsFromTimeline } from "../../projections/MetricsBuckets.ts"
import { MetricsProjector } from "../../projections/Projector.ts"
import { validTaskId } from "../TaskClient.ts"
import { TaskStore } from "../TaskStore.ts"
import { countIndexed, exportHistories, importHistories } from "../audit/Export.ts"
import { historyStream, replayStream } from "../audit/History.ts"
import { rebuildProjections, verifyAll, verifyTask, type VerifyResult } from "../audit/Verify.ts"
import { type CommandSpec, ExitCode, type FlagValues, parseTime, UsageError } from "./args.ts"
import { brief, type Io, iso, redisOptionsOf, runToExitCode, withNamespace, write } from "./context.ts"
import { type Globals, specs } from "./specs.ts"

export interface CommandContext {
  readonly args: ReadonlyArray<string>
  readonly flags: FlagValues
  readonly globals: Globals
  readonly io: Io
  /** Aborted on SIGINT/SIGTERM. */
  readonly signal: AbortSignal
}

export interface Command extends CommandSpec {
  readonly run: (ctx: CommandContext) => Promise<ExitCode>
}

const isJson = (ctx: CommandContext) => ctx.flags.json === true

const run = <E>(ctx: CommandContext, effect: Effect.Effect<ExitCode, E>) =>
  runToExitCode(ctx.io, effect, { json: isJson(ctx), redisLabel: ctx.globals.redisLabel, signal: ctx.signal })

const out = (ctx: CommandContext, text: string) => Effect.promise(() => write(ctx.io.out, text))

// ---------------------------------------------------------------------------------------------------

const runCommand: Command = {
  ...specs.run,
  run: async (ctx) => {
    const path = resolve(process.cwd(), ctx.args[0]!)
    if (!existsSync(path)) {
      ctx.io.err.write(`factorial-ts: error: module not found: ${path}\n`)
      return ExitCode.notFound
    }
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>
    let target = mod.default ?? mod.orchestrator
    const given = process.argv.some((a) => /^--(redis-url|cluster-nodes|namespace|partitions)(=|$)/.test(a))
    if (given && typeof target !== "function") {
      ctx.io.err.write("factorial-ts: note: the module exports an Orchestrator instance, which keeps its own options; " +
        "export a function (options) => Orchestrator for --redis-url/--cluster-nodes/--namespace/--partitions to apply\n")
    }
    if (typeof target === "function") {
      target = await (target as (o: object) => unknown)({
        ...(ctx.globals.clusterNodes !== undefined
          ? { clusterNodes: ctx.globals.clusterNodes }
          : { redisUrl: ctx.globals.redisUrl }),
        namespace: ctx.globals.namespace,
        ...(ctx.globals.partitions !== undefined ? { partitions: ctx.globals.partitions } : {})
      })
    }
    const orchestrator = target as
      | { run?: (o?: object) => Promise<void>; stop?: () => Promise<void>; namespace?: string; agents?: ReadonlyArray<{ name: string }> }
      | undefined
    if (orchestrator === undefined || orchestrator === null || typeof orchestrator.run !== "function") {
      throw new UsageError(`${ctx.args[0]} exports no Orchestrator (default export, or export named "orchestrator")`, "run")
    }
    const agents = (orchestrator.agents ?? []).map((a) => a.name).join(", ")
    ctx.io.err.write(`factorial-ts: running ${agents || "no agents"} in namespace ${orchestrator.namespace ?? "?"} (Ctrl-C stops)\n`)
    await orchestrator.run({ handleSignals: true })
    ctx.io.err.write("factorial-ts: stopped\n")
    return ExitCode.ok
  }
}

// ---------------------------------------------------------------------------------------------------

const OwnerId = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(256))

const enqueueCommand: Command = {
  ...specs.enqueue,
  run: (ctx) => {
    const f = ctx.flags
    return run(
      ctx,
      Effect.gen(function*() {
        let payload: unknown
        try {
          payload = JSON.parse(f.payload as string)
        } catch (e) {
          return yield* new InvalidInput({ message: `--payload is not JSON: ${e instanceof Error ? e.message : String(e)}` })
        }
        const agent = yield* Schema.decodeUnknownEffect(AgentName)(f.agent).pipe(
          Effect.mapError((e) => new InvalidInput({ message: `--agent: ${e.message}` }))
        )
        const ownerId = yield* Schema.decodeUnknownEffect(OwnerId)(f.owner).pipe(
          Effect.mapError((e) => new InvalidInput({ message: `--owner: ${e.message}` }))
        )
        const taskId = yield* validTaskId((f.id as string | undefined) ?? randomUUID())
        const maxRetries = (f["max-retries"] as number | undefined) ?? 5
        if (maxRetries < 0) return yield* new InvalidInput({ message: "--max-retries must not be negative" })
        const now = yield* Clock.currentTimeMillis
        yield* withNamespace(ctx.globals, () =>
          Effect.gen(function*() {
            const store = yield* TaskStore
            return yield* store.execute({ _tag: "Enqueue", taskId, agent, ownerId, payload, maxRetries, now })
          }), { write: true })
        yield* out(ctx, isJson(ctx) ? JSON.stringify({ taskId, agent, ownerId }) + "\n" : taskId + "\n")
        return ExitCode.ok
      })
    )
  }
}

// ---------------------------------------------------------------------------------------------------

const statusCommand: Command = {
  ...specs.status,
  run: (ctx) =>
    run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* validTaskId(ctx.args[0])
          const data = yield* store.getTask(id)
          if (data === undefined) {
            const status = yield* store.getStatus(id)
            if (status === undefined) return yield* new TaskNotFound({ taskId: id })
            yield* out(ctx, isJson(ctx) ? JSON.stringify({ id, status }) + "\n" : `${id}  ${status}  (hot data expired; see history)\n`)
            return ExitCode.ok
          }
          if (isJson(ctx)) {
            yield* out(ctx, JSON.stringify(data) + "\n")
            return ExitCode.ok
          }
          const rows: Array<[string, string]> = [
            ["task", data.id],
            ["status", data.status + (data.cancelRequested && data.status === "processing" ? " (cancel requested)" : "")],
            ["agent", data.agent],
            ["owner", data.ownerId],
            ["turns", String(data.turns)],
            ["attempts", String(data.attempts)],
            ["retries", `${data.retries} of ${data.maxRetries}`],
            ["steering", `${data.pendingSteering} pending`],
            ["created", iso(data.createdAt)],
            ["updated", iso(data.updatedAt)]
          ]
          if (data.worker !== undefined) rows.push(["worker", data.worker])
          if (data.lastHeartbeatAt !== undefined) rows.push(["heartbeat", iso(data.lastHeartbeatAt)])
          if (data.retryAt !== undefined) rows.push(["retry at", iso(data.retryAt)])
          if (data.error !== undefined) rows.push(["error", `${data.error.kind}: ${data.error.message}`])
          if (data.output !== undefined) rows.push(["output", brief(data.output, 200)])
          rows.push(["payload", brief(data.payload, 200)])
          yield* out(ctx, rows.map(([k, v]) => `${k.padEnd(10)} ${v}`).join("\n") + "\n")
          return ExitCode.ok
        }))
    )
}

// ---------------------------------------------------------------------------------------------------

/** A checkpoint's payload as `key=value`: whole, or what changed (ADR 0018). */
const checkpointField = (event: { readonly payload?: unknown; readonly payloadDelta?: unknown }) =>
  event.payloadDelta !== undefined ? `payloadDelta=${brief(event.payloadDelta, 50)}` : `payload=${brief(event.payload, 50)}`

/** The fields of an event worth a glance, as `key=value` pairs. */
export const keyFields = (event: Envelope["event"]): string => {
  switch (event._tag) {
    case "TaskEnqueued":
      return `maxRetries=${event.maxRetries} payload=${brief(event.payload)}`
    case "TaskClaimed":
    case "TaskHeartbeat":
      return `lease=${event.lease} worker=${event.worker}`
    case "TaskSteered":
      return `messages=${event.messages.length} ${brief(event.messages, 50)}`
    case "TurnCompleted":
      return `turn=${event.turn} lease=${event.lease} steeringApplied=${event.steeringApplied} ${checkpointField(event)}`
    case "TaskCompleted":
      return `lease=${event.lease} output=${brief(event.output)}` +
        (event.steeringUnapplied > 0 ? ` steeringUnapplied=${event.steeringUnapplied}` : "")
    case "TaskFailed":
      return `lease=${event.lease} decision=${event.decision} retries=${event.retries} error=${event.error.kind}: ${
        brief(event.error.message, 80)
      }` + (event.retryAt !== undefined ? ` retryAt=${iso(event.retryAt)}` : "")
    case "TaskCancelled":
      return event.lease !== undefined ? `lease=${event.lease}` : ""
    case "TaskReleased":
      return `lease=${event.lease}`
    case "TaskRecovered":
      return `lease=${event.lease} decision=${event.decision} retries=${event.retries}`
    case "TaskWaiting":
      return `turn=${event.turn} lease=${event.lease} pending=${event.pending.map((i) => `${i.kind}:${i.id}`).join(",")}` +
        (event.deadline !== undefined ? ` deadline=${iso(event.deadline)}` : "") + (event.resumed ? " resumed" : "")
    case "ToolResultReceived":
      return `id=${event.id} result=${brief(event.result)}` + (event.resumed ? " resumed" : "")
    case "ChildTasksSpawned":
      return `lease=${event.lease} children=${event.children.map((c) => `${c.agent}:${c.id}`).join(",")}`
    case "ChildTaskFinished":
      return `child=${event.childId} status=${event.status}` +
        (event.output !== undefined ? ` output=${brief(event.output)}` : "") +
        (event.error !== undefined ? ` error=${event.error.kind}: ${brief(event.error.message, 80)}` : "") +
        (event.resumed ? " resumed" : "")
    case "TaskWaitTimedOut":
      return `ids=${event.ids.join(",")} decision=${event.decision}`
    case "TaskCancelRequested":
    case "TaskBackoffElapsed":
    case "TaskExpired":
      return ""
  }
}

const positiveInt = (flags: FlagValues, name: string): number | undefined => {
  const v = flags[name] as number | undefined
  if (v !== undefined && v < 1) throw new UsageError(`--${name} must be at least 1`)
  return v
}

const historyCommand: Command = {
  ...specs.history,
  run: (ctx) => {
    const upTo = positiveInt(ctx.flags, "up-to")
    const pageSize = positiveInt(ctx.flags, "page-size")
    return run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const id = yield* validTaskId(ctx.args[0])
          let n = 0
          const options = { ...(upTo !== undefined ? { to: upTo } : {}), ...(pageSize !== undefined ? { pageSize } : {}) }
          if (isJson(ctx)) {
            yield* historyStream(id, options).pipe(Stream.runForEach((e) => {
              n++
              return out(ctx, JSON.stringify(e) + "\n")
            }))
            if (n === 0) return yield* new TaskNotFound({ taskId: id })
            return ExitCode.ok
          }
          yield* replayStream(id, { ...(upTo !== undefined ? { upTo } : {}), ...(pageSize !== undefined ? { pageSize } : {}) })
            .pipe(
              Stream.runForEach((step) => {
                n++
                return out(
                  ctx,
                  `${iso(step.at)}  v${String(step.version).padEnd(3)} ${step.event._tag.padEnd(20)} → ${
                    step.state.status.padEnd(10)
                  } ${keyFields(step.event)}`.trimEnd() + "\n"
                )
              })
            )
          if (n === 0) return yield* new TaskNotFound({ taskId: id })
          return ExitCode.ok
        }))
    )
  }
}

// ---------------------------------------------------------------------------------------------------

const eventTags = Object.keys(TaskEvent.cases ?? {}) as ReadonlyArray<TaskEventTag>

const tailCommand: Command = {
  ...specs.tail,
  run: (ctx) => {
    const types = typeof ctx.flags.type === "string" ? ctx.flags.type.split(",").map((t) => t.trim()).filter((t) => t !== "") : undefined
    const unknown = types?.filter((t) => !eventTags.includes(t as TaskEventTag)) ?? []
    if (unknown.length > 0) throw new UsageError(`--type: unknown event type ${unknown.join(", ")}; known: ${eventTags.join(", ")}`, "tail")
    const limit = positiveInt(ctx.flags, "limit")
    const agent = ctx.flags.agent as string | undefined
    const owner = ctx.flags.owner as string | undefined
    // What turns emit is shown unless asked not to, or unless --type narrows the output to some event types.
    const emits = typeof ctx.flags.emits === "boolean" ? ctx.flags.emits : types === undefined
    return run(
      ctx,
      withNamespace(ctx.globals, (ks: Keyspace) =>
        Effect.gen(function*() {
          // The library's live feed, from the cursor of "now" taken before "tailing" is printed: nothing is missed.
          const redis = yield* RedisClient
          const cursor = yield* redis.use("cursor", (c) => cursorNow(c, ks))
          // Likewise subscribed to what turns emit before "tailing" is printed (emits have no cursor).
          const emitHub = emits ? makeEmitHub(redisOptionsOf(ctx.globals), ks) : undefined
          const holdEmits = emitHub === undefined ? undefined : yield* Effect.tryPromise({
            try: () => emitHub.listen(() => undefined),
            catch: (e) => e instanceof RedisError ? e : toRedisError("emit subscribe", e)
          })
          const controller = new AbortController()
          const feed = liveEvents(redisOptionsOf(ctx.globals), ks, {
            ...(agent !== undefined ? { agent } : {}),
            ...(owner !== undefined ? { ownerId: owner } : {}),
            types: types === undefined ? eventTags : (types as ReadonlyArray<TaskEventTag>),
            emits
          }, { cursor, signal: controller.signal, emitHub })
          const partitions = ks.partitions
          ctx.io.err.write(`factorial-ts: tailing ${ks.namespace} (${partitions} partition${partitions === 1 ? "" : "s"})\n`)
          let seen = 0
          let next: IteratorResult<LiveItem> = yield* Effect.promise(() => feed.next())
          while (!next.done && (limit === undefined || seen < limit)) {
            const item = next.value
            seen++
            if (item.kind === "emit") {
              const m = item.emit
              // Emitted events are progress, not history: no version; `kind` tells them apart in JSON Lines.
              yield* out(
                ctx,
                isJson(ctx)
                  ? JSON.stringify({ kind: "emit", ...m }) + "\n"
                  : `${iso(m.at)}  p${partitionOf(ks, m.taskId)} ${m.taskId}  ${m.agent}  ${m.ownerId}  emit ${m.type} ${brief(m.data, 200)}`
                    .trimEnd() + "\n"
              )
            } else {
              const e = item.envelope
              yield* out(
                ctx,
                isJson(ctx)
                  ? JSON.stringify(e) + "\n"
                  : `${iso(e.at)}  p${partitionOf(ks, e.taskId)} ${e.taskId}  ${e.agent}  ${e.ownerId}  v${e.version} ${e.event._tag} ${keyFields(e.event)}`
                    .trimEnd() + "\n"
              )
            }
            if (limit !== undefined && seen >= limit) break
            next = yield* Effect.promise(() => feed.next())
          }
          controller.abort()
          yield* Effect.promise(() => feed.return(undefined))
          holdEmits?.()
          return ExitCode.ok
        }))
    )
  }
}

// ---------------------------------------------------------------------------------------------------

/** A progress line on stderr, redrawn in place on a terminal (throttled), then a summary line. */
const progressBar = (io: Io, enabled: boolean) => {
  const tty = io.err.isTTY === true
  let last = 0
  const started = Date.now()
  return {
    update: (done: number, total: number | undefined, detail: string, force = false) => {
      if (!enabled || !tty) return
      const now = Date.now()
      if (!force && now - last < 100) return
      last = now
      const width = 24
      const bar = total !== undefined && total > 0
        ? `[${"#".repeat(Math.min(width, Math.round((done / total) * width))).padEnd(width, ".")}] ${done}/${Math.max(total, done)}`
        : `${done}`
      io.err.write(`\r${bar} ${detail} ${((now - started) / 1000).toFixed(1)}s\x1b[K`)
    },
    /** Clears the bar; the summary line is always written. */
    done: (summary: string) => {
      if (enabled && tty) io.err.write("\r\x1b[K")
      io.err.write(summary + "\n")
    }
  }
}

const mb = (kb: number) => `${(kb / 1024).toFixed(1)} MB`

const exportCommand: Command = {
  ...specs.export,
  run: (ctx) => {
    const now = Date.now()
    const since = typeof ctx.flags.since === "string" ? parseTime(ctx.flags.since, now, "since", "export") : undefined
    const until = typeof ctx.flags.until === "string" ? parseTime(ctx.flags.until, now, "until", "export") : undefined
    const pageSize = positiveInt(ctx.flags, "page-size")
    const batchSize = positiveInt(ctx.flags, "batch-size")
    const statuses = typeof ctx.flags.status === "string"
      ? ctx.flags.status.split(",").map((x) => x.trim()).filter((x) => x !== "")
      : undefined
    const unknownStatus = statuses?.filter((x) => !(TaskStatus.literals as ReadonlyArray<string>).includes(x)) ?? []
    if (unknownStatus.length > 0 || statuses?.length === 0) {
      throw new UsageError(`--status: unknown status ${unknownStatus.join(", ")}; known: ${TaskStatus.literals.join(", ")}`, "export")
    }
    const bar = progressBar(ctx.io, ctx.flags.progress !== false)
    return run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const window = {
            ...(since !== undefined ? { since } : {}),
            until: until ?? now + 1,
            ...(statuses !== undefined ? { statuses: statuses as ReadonlyArray<TaskStatus> } : {})
          }
          const total = ctx.io.err.isTTY === true ? yield* countIndexed(window) : undefined
          let tasks = 0
          let events = 0
          let buffer = ""
          yield* exportHistories({
            ...window,
            ...(typeof ctx.flags.agent === "string" ? { agent: ctx.flags.agent } : {}),
            ...(pageSize !== undefined ? { pageSize } : {}),
            ...(batchSize !== undefined ? { batchSize } : {}),
            ...(typeof ctx.flags["expired-source"] === "string"
              ? { expiredSource: ctx.flags["expired-source"] as "auto" | "log" | "scan" }
              : {}),
            onProgress: (p) => {
              tasks = p.tasks
              events = p.events
              bar.update(p.tasks, total, `tasks, ${p.events} events`)
            }
          }).pipe(
            Stream.runForEach((chunk) => {
              buffer += chunk
              if (buffer.length < 64 * 1024) return Effect.void
              const text = buffer
              buffer = ""
              return Effect.promise(() => write(ctx.io.out, text))
            })
          )
          if (buffer !== "") yield* Effect.promise(() => write(ctx.io.out, buffer))
          bar.done(`factorial-ts: exported ${tasks} tasks, ${events} events (peak RSS ${mb(process.resourceUsage().maxRSS)})`)
          return ExitCode.ok
        }))
    )
  }
}

// ---------------------------------------------------------------------------------------------------

const importCommand: Command = {
  ...specs.import,
  run: (ctx) => {
    const file = ctx.flags.file as string | undefined
    if (file === undefined && process.stdin.isTTY === true) {
      throw new UsageError("import reads JSON Lines from stdin: pipe a file in, or pass --file", "import")
    }
    if (file !== undefined && !existsSync(file)) {
      ctx.io.err.write(`factorial-ts: error: file not found: ${file}\n`)
      return Promise.resolve(ExitCode.notFound)
    }
    const batchSize = positiveInt(ctx.flags, "batch-size")
    // The reader is made when the stream starts: a readline interface made earlier would drop the lines
    // it reads before the first pull (its async iterator starts listening only then).
    const lines = Stream.suspend(() =>
      Stream.fromAsyncIterable(
        createInterface({ input: file !== undefined ? createReadStream(file, "utf8") : process.stdin, crlfDelay: Infinity }),
        (e) => new InvalidInput({ message: `reading input: ${e instanceof Error ? e.message : String(e)}` })
      )
    )
    return run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const report = yield* importHistories(lines, batchSize !== undefined ? { batchSize } : {})
          yield* out(
            ctx,
            isJson(ctx)
              ? JSON.stringify(report) + "\n"
              : `imported ${report.tasks} tasks, ${report.events} events into ${ctx.globals.namespace}\n`
          )
          return ExitCode.ok
        }), { write: true })
    )
  }
}

// ---------------------------------------------------------------------------------------------------

const divergenceText = (r: VerifyResult): string =>
  [
    `${r.taskId}: ${r.liveStatus ?? "(no hash)"} in the hash, ${r.expectedStatus ?? "(no history)"} by its history`,
    ...r.divergences.map((d) => `  ${d.field}: live ${brief(d.live, 80)}, expected ${brief(d.expected, 80)}`)
  ].join("\n")

const verifyCommand: Command = {
  ...specs.verify,
  run: (ctx) => {
    const bar = progressBar(ctx.io, ctx.flags.progress !== false)
    return run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          if (ctx.args[0] !== undefined) {
            const r = yield* verifyTask(ctx.args[0])
            yield* out(ctx, isJson(ctx) ? JSON.stringify(r) + "\n" : r.ok ? `${r.taskId}: ok (${r.historyLength} events)\n` : divergenceText(r) + "\n")
            return r.ok ? ExitCode.ok : ExitCode.failure
          }
          const report = yield* verifyAll({
            onProgress: (p) => bar.update(p.checked, undefined, `tasks checked, ${p.divergent} divergent (p${p.partition} ${p.status})`),
            onDivergence: (r) => {
              if (!isJson(ctx)) ctx.io.out.write(divergenceText(r) + "\n")
            }
          })
          bar.done(`factorial-ts: verified ${report.checked} tasks, ${report.divergent} divergent`)
          if (isJson(ctx)) yield* out(ctx, JSON.stringify(report) + "\n")
          else yield* out(ctx, `${report.checked} tasks checked, ${report.divergent} divergent\n`)
          return report.divergent === 0 ? ExitCode.ok : ExitCode.failure
        }))
    )
  }
}

const projectCommand: Command = {
  ...specs.project,
  run: (ctx) => {
    const bucketSize = ctx.flags["bucket-size"] as MetricsTimelineConfig["bucketSize"] | undefined // one of the spec's choices
    const timelineDuration = positiveInt(ctx.flags, "timeline-duration")
    const retentionMultiplier = positiveInt(ctx.flags, "retention-multiplier")
    const timeline = new MetricsTimelineConfig({
      ...(bucketSize !== undefined ? { bucketSize } : {}),
      ...(timelineDuration !== undefined ? { timelineDuration } : {}),
      ...(retentionMultiplier !== undefined ? { retentionMultiplier } : {})
    })
    return run(
      ctx,
      withNamespace(ctx.globals, (ks: Keyspace) =>
        Effect.gen(function*() {
          const projector = yield* MetricsProjector
          ctx.io.err.write(
            `factorial-ts: projecting the metrics of ${ks.namespace} (${ks.partitions} partition${ks.partitions === 1 ? "" : "s"}, ` +
              `buckets of one ${timeline.bucketSize.replace(/s$/, "")})\n`
          )
          return yield* Effect.scoped(projector.run)
        }).pipe(Effect.provide(MetricsProjector.layer(ks, metricsOptionsFromTimeline(timeline)))))
    )
  }
}

const rebuildCommand: Command = {
  ...specs.rebuild,
  run: (ctx) => {
    const bar = progressBar(ctx.io, ctx.flags.progress !== false)
    const fix = ctx.flags.fix === true
    return run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const report = yield* rebuildProjections({
            fix,
            onProgress: (p) => bar.update(p.checked, undefined, `histories folded, ${p.divergent} divergent (p${p.partition})`),
            onDivergence: (r) => {
              if (!isJson(ctx)) ctx.io.out.write(divergenceText(r) + "\n")
            }
          })
          bar.done(`factorial-ts: folded ${report.checked} histories, ${report.divergent} divergent, ${report.fixed} fixed`)
          if (isJson(ctx)) yield* out(ctx, JSON.stringify(report) + "\n")
          else {
            yield* out(
              ctx,
              `${report.checked} histories folded, ${report.divergent} divergent` +
                (fix ? `, ${report.fixed} fixed${report.raced > 0 ? `, ${report.raced} changed while fixing (run again)` : ""}` : "") +
                "\n"
            )
          }
          const remaining = fix ? report.divergent - report.fixed : report.divergent
          return remaining === 0 ? ExitCode.ok : ExitCode.failure
        }), { write: fix })
    )
  }
}

// ---------------------------------------------------------------------------------------------------

const functionsCommand: Command = {
  ...specs.functions,
  run: (ctx) =>
    run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const redis = yield* RedisClient
          const others = yield* redis.use("function list", otherReleasesLibraries)
          const prune = ctx.flags.prune === true
          if (prune && others.length > 0) yield* redis.use("function delete", (c) => deleteLibraries(c, others))
          const current = `factorial_${libraryVersion}`
          yield* out(
            ctx,
            isJson(ctx)
              ? JSON.stringify({ current, others, deleted: prune ? others : [] }) + "\n"
              : `this release: ${current}\n` + (others.length === 0
                ? "no library of another release\n"
                : `${prune ? "deleted" : "other releases (delete with --prune)"}: ${others.join(", ")}\n`)
          )
          return ExitCode.ok
        }))
    )
}

const demoCommand: Command = {
  ...specs.demo,
  run: async (ctx) => {
    const { runDemo } = await import("./demo.ts")
    const g = ctx.globals
    // An explicit choice is used as given; otherwise the demo finds (or starts) a Redis of its own.
    const redis = g.clusterNodes !== undefined
      ? { clusterNodes: g.clusterNodes, label: g.redisLabel }
      : typeof ctx.flags["redis-url"] === "string"
      ? { redisUrl: g.redisUrl!, label: g.redisLabel }
      : undefined
    const code = await runDemo({ args: ctx.args, ...(redis !== undefined ? { redis } : {}) })
    return (typeof code === "number" ? code : ExitCode.ok) as ExitCode
  }
}

export const commands: ReadonlyArray<Command> = [
  runCommand,
  enqueueCommand,
  statusCommand,
  historyCommand,
  tailCommand,
  exportCommand,
  importCommand,
  rebuildCommand,
  verifyCommand,
  projectCommand,
  functionsCommand,
  demoCommand
]

