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
  {
    name: "cluster-nodes",
    kind: "string",
    placeholder: "<host:port,...>",
    description: "Seed nodes of a Redis Cluster instead (default: env REDIS_CLUSTER_NODES); not with --redis-url"
  },
  { name: "namespace", kind: "string", placeholder: "<name>", description: "Key namespace (default: factorial)" },
  {
    name: "partitions",
    kind: "int",
    placeholder: "<n>",
    description: "Partitions of the namespace (default: as recorded by the namespace, else 1)"
  }
]

export interface ClusterNode {
  readonly host: string
  readonly port: number
}

export interface Globals {
  /** The standalone Redis, when no Cluster is given. */
  readonly redisUrl: string | undefined
  /** Seed nodes of a Redis Cluster (exclusive with `redisUrl`). */
  readonly clusterNodes: ReadonlyArray<ClusterNode> | undefined
  /** Where the command connects, for messages: the URL, or `cluster host:port,...`. */
  readonly redisLabel: string
  readonly namespace: string
  /** As given on the command line; undefined: the namespace's own. */
  readonly partitions: number | undefined
}

/**
 * `host:port,host:port,...` (IPv6 hosts in brackets: `[::1]:7000`), as `--cluster-nodes` and
 * `REDIS_CLUSTER_NODES` take it. `source` names the flag or variable in the error.
 */
export const parseClusterNodes = (raw: string, source: string): ReadonlyArray<ClusterNode> => {
  const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "")
  if (items.length === 0) throw new UsageError(`${source}: expected host:port[,host:port...], got ${JSON.stringify(raw)}`)
  return items.map((item) => {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})$/.exec(item)
    const port = m === null ? NaN : Number(m[2])
    if (m === null || port < 1 || port > 65535) {
      throw new UsageError(`${source}: expected host:port[,host:port...], got ${JSON.stringify(item)}`)
    }
    return { host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port }
  })
}

/**
 * Where to connect: `--cluster-nodes` or `--redis-url` (not both), else env `REDIS_CLUSTER_NODES` or
 * `REDIS_URL` (not both: which one is meant is not guessed), else redis://127.0.0.1:6379.
 */
const redisOf = (flags: FlagValues, env: NodeJS.ProcessEnv): Pick<Globals, "redisUrl" | "clusterNodes" | "redisLabel"> => {
  const url = flags["redis-url"] as string | undefined
  const nodes = flags["cluster-nodes"] as string | undefined
  const cluster = (list: ReadonlyArray<ClusterNode>) => ({
    redisUrl: undefined,
    clusterNodes: list,
    redisLabel: `cluster ${list.map((n) => (n.host.includes(":") ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)).join(",")}`
  })
  const standalone = (u: string) => ({ redisUrl: u, clusterNodes: undefined, redisLabel: u })
  if (url !== undefined && nodes !== undefined) {
    throw new UsageError("--redis-url and --cluster-nodes exclude each other: give one")
  }
  if (nodes !== undefined) return cluster(parseClusterNodes(nodes, "--cluster-nodes"))
  if (url !== undefined) return standalone(url)
  const envNodes = env.REDIS_CLUSTER_NODES ?? ""
  const envUrl = env.REDIS_URL ?? ""
  if (envNodes.trim() !== "" && envUrl !== "") {
    throw new UsageError("both REDIS_URL and REDIS_CLUSTER_NODES are set: choose with --redis-url or --cluster-nodes")
  }
  if (envNodes.trim() !== "") return cluster(parseClusterNodes(envNodes, "REDIS_CLUSTER_NODES"))
  return standalone(envUrl !== "" ? envUrl : "redis://127.0.0.1:6379")
}

export const globalsOf = (flags: FlagValues, env: NodeJS.ProcessEnv = process.env): Globals => {
  const namespace = (flags.namespace as string | undefined) ?? "factorial"
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(namespace)) {
    throw new UsageError(`--namespace must be 1-64 of [A-Za-z0-9_.-], got ${JSON.stringify(namespace)}`)
  }
  const partitions = flags.partitions as number | undefined
  if (partitions !== undefined && (partitions < 1 || partitions > 1024)) {
    throw new UsageError(`--partitions must be from 1 to 1024, got ${partitions}`)
  }
  return { ...redisOf(flags, env), namespace, partitions }
}

export const json: FlagSpec = { name: "json", kind: "boolean", description: "Machine-readable output" }

export const runSpec: CommandSpec = {
  name: "run",
  summary: "Run the workers of an orchestrator defined in a module",
  description: "Imports the module and runs its Orchestrator (the default export, or the export named\n" +
    "`orchestrator`) until SIGINT/SIGTERM, then stops gracefully. The export may also be a function\n" +
    "(options) => Orchestrator, called with { redisUrl or clusterNodes, namespace, partitions } from the\n" +
    "global flags.",
  args: [{ name: "config-module", description: "Path of a .ts or .js module" }],
  flags: [],
  examples: [
    "factorial-ts run ./agents.ts",
    "factorial-ts --namespace staging run ./agents.ts",
    "factorial-ts --cluster-nodes 10.0.0.1:6379,10.0.0.2:6379 --partitions 16 run ./agents.ts"
  ],
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
  description: "Prints every event written from now on until Ctrl-C, and what running\n" +
    "turns emit (ctx.emit: progress, not history; lines with \"emit <type>\", in JSON {\"kind\":\"emit\",...}).",
  args: [],
  flags: [
    { name: "agent", kind: "string", placeholder: "<name>", description: "Only this agent's events" },
    { name: "owner", kind: "string", placeholder: "<id>", description: "Only this owner's events" },
    { name: "type", kind: "string", placeholder: "<Tag,...>", description: "Only these event types, e.g. TaskFailed,TaskCompleted" },
    {
      name: "emits",
      kind: "boolean",
      description: "Also what turns emit (default on, off with --type; --no-emits hides them)"
    },
    { name: "limit", kind: "int", description: "Exit after this many lines" },
    { ...json, description: "One envelope (or emitted event) per line (JSON Lines)" }
  ],
  examples: [
    "factorial-ts tail --agent chat --type TaskFailed,TaskCompleted",
    "factorial-ts tail --no-emits",
    "factorial-ts tail --json | jq ."
  ],
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

export const projectSpec: CommandSpec = {
  name: "project",
  summary: "Keep the metrics timeline current, until SIGINT/SIGTERM (for worker processes with projectMetrics off)",
  description: "Follows the namespace's event logs and folds them into the metrics buckets, as every\n" +
    "orchestrator does unless `projectMetrics: false`. Several of these (and orchestrators that project)\n" +
    "share the partitions by lease. The timeline flags must match the orchestrators' MetricsTimelineConfig.",
  args: [],
  flags: [
    {
      name: "bucket-size",
      kind: "string",
      choices: ["seconds", "minutes", "hours", "days"],
      description: "MetricsTimelineConfig.bucketSize (default minutes)"
    },
    { name: "timeline-duration", kind: "int", placeholder: "<seconds>", description: "MetricsTimelineConfig.timelineDuration (default 3600)" },
    { name: "retention-multiplier", kind: "int", description: "MetricsTimelineConfig.retentionMultiplier (default 2)" }
  ],
  examples: ["factorial-ts --namespace prod project", "factorial-ts project --bucket-size hours --timeline-duration 86400"],
}

export const functionsSpec: CommandSpec = {
  name: "functions",
  summary: "List the Redis Function libraries of other factorial-ts releases; --prune deletes them",
  description: "Each release loads its own library (factorial_<version>) on every master and never deletes\n" +
    "another's, so processes of two releases can share a Redis during a rolling upgrade; old ones stay\n" +
    "until deleted. Deleting one that a running process still uses is harmless: its next call loads it again.",
  args: [],
  flags: [{ name: "prune", kind: "boolean", description: "Delete them (on every master)" }, json],
  examples: ["factorial-ts functions", "factorial-ts functions --prune"],
}

export const demoSpec: CommandSpec = {
  name: "demo",
  summary: "Run the demo (an agent that needs no API key, and the dashboard)",
  description: "Uses the Redis of --redis-url or --cluster-nodes (or env REDIS_CLUSTER_NODES) when given; else\n" +
    "env REDIS_URL, else 127.0.0.1:6379 if it answers, else a private redis-server it starts and stops.",
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
  project: projectSpec,
  functions: functionsSpec,
  demo: demoSpec
}

export const commandSpecs: ReadonlyArray<CommandSpec> = Object.values(specs)
