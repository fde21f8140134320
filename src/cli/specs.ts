/**
 * The command line's specs: global flags, and each command's arguments, flags, help and examples.
 * No handler code and no heavy imports here, so `--help` and argument errors answer at once.
 *
 * Invariant: the handlers in commands.ts take their spec from here, so help, parsing and behaviour
 * describe the same flags.
 */
import { type CommandSpec, type FlagSpec, type FlagValues, UsageError } from "./args.ts"

export const globalFlags: ReadonlyArray<FlagSpec> = [
  {
    name: "redis-url",
    kind: "string",
    placeholder: "<url>",
    description: "Redis to use (default: env REDIS_URL, else redis://127.0.0.1:6379)"
  },
  { name: "namespace", kind: "string", placeholder: "<name>", description: "Key namespace (default: factorial)" },
  {
    name: "partitions",
    kind: "int",
    placeholder: "<n>",
    description: "Partitions of the namespace (default: as recorded by the namespace, else 1)"
  }
]

export interface Globals {
  readonly redisUrl: string
  readonly namespace: string
  /** As given on the command line; undefined: the namespace's own. */
  readonly partitions: number | undefined
}

export const globalsOf = (flags: FlagValues): Globals => {
  const namespace = (flags.namespace as string | undefined) ?? "factorial"
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(namespace)) {
    throw new UsageError(`--namespace must be 1-64 of [A-Za-z0-9_.-], got ${JSON.stringify(namespace)}`)
  }
  const partitions = flags.partitions as number | undefined
  if (partitions !== undefined && (partitions < 1 || partitions > 1024)) {
    throw new UsageError(`--partitions must be from 1 to 1024, got ${partitions}`)
  }
  return {
    redisUrl: (flags["redis-url"] as string | undefined) ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
    namespace,
    partitions
  }
}

export const json: FlagSpec = { name: "json", kind: "boolean", description: "Machine-readable output" }

export const runSpec: CommandSpec = {
  name: "run",
  summary: "Run the workers of an orchestrator defined in a module",
  description: "Imports the module and runs its Orchestrator (the default export, or the export named\n" +
    "`orchestrator`) until SIGINT/SIGTERM, then stops gracefully. The export may also be a function\n" +
    "(options) => Orchestrator, called with { redisUrl, namespace, partitions } from the global flags.",
  args: [{ name: "config-module", description: "Path of a .ts or .js module" }],
  flags: [],
  examples: ["factorial-ts run ./agents.ts", "factorial-ts --namespace staging run ./agents.ts"],
}

export const enqueueSpec: CommandSpec = {
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
}

export const statusSpec: CommandSpec = {
  name: "status",
  summary: "Show a task's status and data",
  args: [{ name: "task-id", description: "The task" }],
  flags: [json],
}

export const historySpec: CommandSpec = {
  name: "history",
  summary: "Show a task's history as a timeline (time, version, event, resulting status, key fields)",
  args: [{ name: "task-id", description: "The task" }],
  flags: [
    { ...json, description: "One envelope per line (JSON Lines), as stored" },
    { name: "up-to", kind: "int", placeholder: "<version>", description: "Stop after this version" },
    { name: "page-size", kind: "int", description: "History entries read per round trip (default 200)" }
  ],
}

export const tailSpec: CommandSpec = {
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
}

export const exportSpec: CommandSpec = {
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
      name: "status",
      kind: "string",
      placeholder: "<s,...>",
      description: "Only tasks now in these statuses, e.g. expired (to archive each task once)"
    },
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
  examples: [
    "factorial-ts export --since 7d > last-week.jsonl",
    "factorial-ts export --status expired --since 2025-03-01 --until 2025-03-02 > 2025-03-01.jsonl",
    "factorial-ts export --since 2025-01-01 --until 2025-02-01 --agent chat > jan.jsonl"],
}

export const importSpec: CommandSpec = {
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
}

export const verifySpec: CommandSpec = {
  name: "verify",
  summary: "Compare status projections with the fold of their histories (one task, or every indexed task)",
  args: [{ name: "task-id", description: "Verify only this task", optional: true }],
  flags: [json, { name: "progress", kind: "boolean", description: "Progress on stderr (default on; --no-progress)" }],
}

export const rebuildSpec: CommandSpec = {
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
}

export const demoSpec: CommandSpec = {
  name: "demo",
  summary: "Run the demo (an agent that needs no API key, and the dashboard)",
  args: [],
  flags: [],
  passThrough: true,
}

export const specs = {
  run: runSpec,
  enqueue: enqueueSpec,
  status: statusSpec,
  history: historySpec,
  tail: tailSpec,
  export: exportSpec,
  import: importSpec,
  rebuild: rebuildSpec,
  verify: verifySpec,
  demo: demoSpec
}

export const commandSpecs: ReadonlyArray<CommandSpec> = Object.values(specs)
