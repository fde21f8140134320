/**
 * The commands of `factorial-ts`: each a spec (arguments, flags, help) and a handler that returns an
 * exit code. Handlers are thin: the work is done by the library (TaskStore, src/audit), so the CLI and
 * the API cannot disagree.
 *
 * Invariant: stdout carries only the command's result (human text, or JSON with `--json`: one document,
 * or JSON Lines for streams); progress, notes and errors go to stderr.
 */
import { randomUUID } from "node:crypto"
import { existsSync } from "node:fs"
import { createReadStream } from "node:fs"
import { createInterface } from "node:readline"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { Clock, Effect, Schema, Stream } from "effect"
import { allPartitions, type Keyspace, partitionKeys } from "../../streams/Keys.ts"
import { RedisClient } from "../../streams/RedisClient.ts"
import { decodeEnvelope, type Envelope, TaskEvent, type TaskEventTag } from "../../streams/TaskEvent.ts"
import { AgentName } from "../../streams/TaskEvent.ts"
import { InvalidInput, TaskNotFound } from "../Errors.ts"
import { validTaskId } from "../TaskClient.ts"
import { TaskStore } from "../TaskStore.ts"
import { countIndexed, exportHistories, importHistories } from "../audit/Export.ts"
import { historyStream, replayStream } from "../audit/History.ts"
import { rebuildProjections, verifyAll, verifyTask, type VerifyResult } from "../audit/Verify.ts"
import { type CommandSpec, ExitCode, type FlagSpec, type FlagValues, parseTime, UsageError } from "./args.ts"
import { brief, type Globals, type Io, iso, runToExitCode, withNamespace, write } from "./context.ts"

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

const json: FlagSpec = { name: "json", kind: "boolean", description: "Machine-readable output" }
const isJson = (ctx: CommandContext) => ctx.flags.json === true

const run = <E>(ctx: CommandContext, effect: Effect.Effect<ExitCode, E>) =>
  runToExitCode(ctx.io, effect, { json: isJson(ctx), redisUrl: ctx.globals.redisUrl, signal: ctx.signal })

const out = (ctx: CommandContext, text: string) => Effect.promise(() => write(ctx.io.out, text))

// ---------------------------------------------------------------------------------------------------

const runCommand: Command = {
  name: "run",
  summary: "Run the workers of an orchestrator defined in a module",
  description: "Imports the module and runs its Orchestrator (the default export, or the export named\n" +
    "`orchestrator`) until SIGINT/SIGTERM, then stops gracefully. The export may also be a function\n" +
    "(options) => Orchestrator, called with { redisUrl, namespace, partitions } from the global flags.",
  args: [{ name: "config-module", description: "Path of a .ts or .js module" }],
  flags: [],
  examples: ["factorial-ts run ./agents.ts", "factorial-ts --namespace staging run ./agents.ts"],
  run: async (ctx) => {
    const path = resolve(process.cwd(), ctx.args[0]!)
    if (!existsSync(path)) {
      ctx.io.err.write(`factorial-ts: error: module not found: ${path}\n`)
      return ExitCode.notFound
    }
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>
    let target = mod.default ?? mod.orchestrator
    if (typeof target === "function") {
      target = await (target as (o: object) => unknown)({
        redisUrl: ctx.globals.redisUrl,
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
  name: "enqueue",
  summary: "Enqueue a task with a JSON payload (no agent code needed)",
  args: [],
  flags: [
    { name: "agent", kind: "string", placeholder: "<name>", description: "The agent (queue) to run it", required: true },
    { name: "owner", kind: "string", placeholder: "<id>", description: "Owner id", required: true },
    { name: "payload", kind: "string", placeholder: "<json>", description: "The payload, as JSON", required: true },
    { name: "id", kind: "string", placeholder: "<task-id>", description: "Task id (default: a random UUID)" },
    { name: "max-retries", kind: "int", description: "Retries of the task (default 5)" },
    json
  ],
  examples: [`factorial-ts enqueue --agent chat --owner u1 --payload '{"messages":[{"role":"user","content":"hi"}]}'`],
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
  name: "status",
  summary: "Show a task's status and data",
  args: [{ name: "task-id", description: "The task" }],
  flags: [json],
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
      return `turn=${event.turn} lease=${event.lease} steeringApplied=${event.steeringApplied} payload=${brief(event.payload, 50)}`
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
  name: "history",
  summary: "Show a task's history as a timeline (time, version, event, resulting status, key fields)",
  args: [{ name: "task-id", description: "The task" }],
  flags: [
    { ...json, description: "One envelope per line (JSON Lines), as stored" },
    { name: "up-to", kind: "int", placeholder: "<version>", description: "Stop after this version" },
    { name: "page-size", kind: "int", description: "History entries read per round trip (default 200)" }
  ],
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
  name: "tail",
  summary: "Follow live events from the partition logs (XREAD BLOCK from now on)",
  description: "Prints every event written from now on, heartbeats included, until Ctrl-C.",
  args: [],
  flags: [
    { name: "agent", kind: "string", placeholder: "<name>", description: "Only this agent's events" },
    { name: "owner", kind: "string", placeholder: "<id>", description: "Only this owner's events" },
    { name: "type", kind: "string", placeholder: "<Tag,...>", description: "Only these event types, e.g. TaskFailed,TaskCompleted" },
    { name: "limit", kind: "int", description: "Exit after this many events" },
    { ...json, description: "One envelope per line (JSON Lines)" }
  ],
  examples: ["factorial-ts tail --agent chat --type TaskFailed,TaskCompleted", "factorial-ts tail --json | jq ."],
  run: (ctx) => {
    const types = typeof ctx.flags.type === "string" ? ctx.flags.type.split(",").map((t) => t.trim()).filter((t) => t !== "") : undefined
    const unknown = types?.filter((t) => !eventTags.includes(t as TaskEventTag)) ?? []
    if (unknown.length > 0) throw new UsageError(`--type: unknown event type ${unknown.join(", ")}; known: ${eventTags.join(", ")}`, "tail")
    const limit = positiveInt(ctx.flags, "limit")
    const agent = ctx.flags.agent as string | undefined
    const owner = ctx.flags.owner as string | undefined
    return run(
      ctx,
      withNamespace(ctx.globals, (ks: Keyspace) =>
        Effect.scoped(Effect.gen(function*() {
          const redis = yield* RedisClient
          const conn = yield* redis.dedicated("tail")
          const keys = allPartitions(ks).map((p) => partitionKeys(ks, p).events)
          // "$" resolved to concrete ids first, so that nothing written after "ready" is missed.
          const ids = yield* Effect.forEach(keys, (k) =>
            redis.use("xrevrange", (c) => c.xrevrange(k, "+", "-", "COUNT", 1)).pipe(Effect.map((e) => e[0]?.[0] ?? "0-0")))
          ctx.io.err.write(`factorial-ts: tailing ${ks.namespace} (${keys.length} partition${keys.length === 1 ? "" : "s"})\n`)
          let seen = 0
          while (limit === undefined || seen < limit) {
            const reply = yield* redis.use("xread", () =>
              conn.xread("COUNT", 100, "BLOCK", 1000, "STREAMS", ...keys, ...ids) as Promise<
                Array<[string, Array<[string, Array<string>]>]> | null
              >)
            if (reply === null) continue
            for (const [key, entries] of reply) {
              const p = keys.indexOf(key)
              for (const [id, fields] of entries) {
                ids[p] = id
                const raw = fields[fields.indexOf("e") + 1]
                if (raw === undefined) continue
                const e = yield* decodeEnvelope(raw, id)
                if (agent !== undefined && e.agent !== agent) continue
                if (owner !== undefined && e.ownerId !== owner) continue
                if (types !== undefined && !types.includes(e.event._tag)) continue
                if (limit !== undefined && seen >= limit) continue
                seen++
                yield* out(
                  ctx,
                  isJson(ctx)
                    ? JSON.stringify(e) + "\n"
                    : `${iso(e.at)}  p${p} ${e.taskId}  ${e.agent}  ${e.ownerId}  v${e.version} ${e.event._tag} ${keyFields(e.event)}`
                      .trimEnd() + "\n"
                )
              }
            }
          }
          return ExitCode.ok
        })))
    )
  }
}

// ---------------------------------------------------------------------------------------------------

/** A progress line on stderr, redrawn in place on a terminal, throttled. */
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
    done: (summary: string) => {
      if (enabled && tty) io.err.write("\r\x1b[K")
      if (enabled) io.err.write(summary + "\n")
    }
  }
}

const mb = (kb: number) => `${(kb / 1024).toFixed(1)} MB`

const exportCommand: Command = {
  name: "export",
  summary: "Export task histories as JSON Lines to stdout (streaming, bounded memory)",
  description: "Takes the tasks that entered their current status in [since, until): finished tasks by when\n" +
    "they finished, live ones by their last status change, expired ones by when they expired. One line\n" +
    "per task: {taskId, agent, ownerId, events:[envelopes]}. Times: now, epoch ms, ISO 8601, or 2h / 7d ago.",
  args: [],
  flags: [
    { name: "since", kind: "string", placeholder: "<time>", description: "Window start, inclusive (default: the beginning)" },
    { name: "until", kind: "string", placeholder: "<time>", description: "Window end, exclusive (default: now)" },
    { name: "agent", kind: "string", placeholder: "<name>", description: "Only this agent's tasks" },
    {
      name: "expired-source",
      kind: "string",
      choices: ["auto", "log", "scan"],
      description: "How expired tasks are found (default auto; scan is O(keys))"
    },
    { name: "page-size", kind: "int", description: "History entries per read (default 100)" },
    { name: "batch-size", kind: "int", description: "Tasks read per round trip (default 32)" },
    { name: "progress", kind: "boolean", description: "Progress on stderr (default on; --no-progress)" }
  ],
  examples: ["factorial-ts export --since 7d > last-week.jsonl", "factorial-ts export --since 2025-01-01 --until 2025-02-01 --agent chat > jan.jsonl"],
  run: (ctx) => {
    const now = Date.now()
    const since = typeof ctx.flags.since === "string" ? parseTime(ctx.flags.since, now, "since", "export") : undefined
    const until = typeof ctx.flags.until === "string" ? parseTime(ctx.flags.until, now, "until", "export") : undefined
    const pageSize = positiveInt(ctx.flags, "page-size")
    const batchSize = positiveInt(ctx.flags, "batch-size")
    const bar = progressBar(ctx.io, ctx.flags.progress !== false)
    return run(
      ctx,
      withNamespace(ctx.globals, () =>
        Effect.gen(function*() {
          const window = { ...(since !== undefined ? { since } : {}), until: until ?? now + 1 }
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
  name: "import",
  summary: "Import JSON Lines histories from stdin into an empty namespace",
  description: "Writes each history and rebuilds its status projection from the fold, so that history,\n" +
    "replay and verify work on the copy. Refuses a namespace that has any key. Imported tasks are not\n" +
    "queued: the namespace is an archive.",
  args: [],
  flags: [
    { name: "file", kind: "string", placeholder: "<path>", description: "Read this file instead of stdin" },
    { name: "batch-size", kind: "int", description: "Tasks written per round trip (default 100)" },
    json
  ],
  examples: ["factorial-ts --namespace archive import < last-week.jsonl"],
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
  name: "verify",
  summary: "Compare status projections with the fold of their histories (one task, or every indexed task)",
  args: [{ name: "task-id", description: "Verify only this task", optional: true }],
  flags: [json, { name: "progress", kind: "boolean", description: "Progress on stderr (default on; --no-progress)" }],
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

const rebuildCommand: Command = {
  name: "rebuild",
  summary: "Recompute every task's status projection from its history; report, and with --fix repair",
  description: "Finds tasks by their histories (SCAN over the history keys: O(keys)), folds each history,\n" +
    "and compares hash, index and delayed entries. Exit 1 when a divergence remains (without --fix,\n" +
    "any divergence); with --fix, 0 once every divergent task was rewritten.",
  args: [],
  flags: [
    { name: "fix", kind: "boolean", description: "Write the folded projection of every divergent task" },
    json,
    { name: "progress", kind: "boolean", description: "Progress on stderr (default on; --no-progress)" }
  ],
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

const demoCommand: Command = {
  name: "demo",
  summary: "Run the demo (an agent that needs no API key, and the dashboard)",
  args: [],
  flags: [],
  passThrough: true,
  run: async (ctx) => {
    const { runDemo } = await import("./demo.ts")
    const code = await runDemo({ args: ctx.args, globals: ctx.globals })
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
  demoCommand
]

