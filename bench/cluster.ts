/**
 * `npm run bench:cluster`: our orchestrator's throughput on a standalone Redis and on a 3-master Redis
 * Cluster, each with 1 and N partitions — bulk enqueue, a drain by one worker process and a drain by K
 * worker processes — printed and written between the `bench:cluster` markers of docs/performance.md.
 *
 *   node bench/cluster.ts [--size=small|default] [--reps=N] [--partitions=N] [--processes=K]
 *                         [--concurrency=C] [--no-docs]
 *
 * It starts its own servers (one standalone redis-server and three cluster masters on free loopback
 * ports, never the shared 6379) and stops them by pid at the end, also on error. Each measured run
 * starts from FLUSHALLed servers; per scenario and topology one warm-up run at half the size is
 * excluded; the topologies' order rotates in each repetition; the report gives medians. Raw results go
 * to bench/results/<date>-cluster-<size>.json (not committed).
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { clusterConsoleTable, clusterMarkdown, type TopologyResult } from "./cluster-report.ts"
import { type ClusterMeasurement, clusterScenarios, type ClusterSettings, type ClusterSizes } from "./cluster-scenarios.ts"
import { writeBlock } from "./docs-block.ts"
import { describeMachine } from "./machine.ts"
import { type PrivateCluster, startCluster } from "./redis-cluster.ts"
import { type PrivateRedis, startRedis } from "./redis-server.ts"
import { median } from "./stats.ts"
import { clusterTopology, standaloneTopology, type Topology } from "./topology.ts"
import { forkWorkerProcesses, type WorkerProcesses } from "./worker-processes.ts"

const sizes: Readonly<Record<string, ClusterSizes>> = {
  small: { enqueue: 2500, drain: 1500 },
  default: { enqueue: 10000, drain: 6000 }
}

const parseArgs = (argv: ReadonlyArray<string>) => {
  const get = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
  const int = (name: string, fallback: number) => {
    const n = Number(get(name) ?? fallback)
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`)
    return n
  }
  const size = get("size") ?? "default"
  if (sizes[size] === undefined) throw new Error(`--size must be one of ${Object.keys(sizes).join(", ")}`)
  return {
    size,
    reps: int("reps", 3),
    partitions: int("partitions", 6),
    processes: int("processes", 3),
    concurrency: int("concurrency", 100),
    docs: !argv.includes("--no-docs")
  }
}

const scaled = (s: ClusterSizes, k: number): ClusterSizes => ({ enqueue: Math.ceil(s.enqueue * k), drain: Math.ceil(s.drain * k) })

/** The reproduce command for these arguments (defaults left out). */
const commandOf = (args: ReturnType<typeof parseArgs>) => {
  const flags = [
    ...(args.size === "default" ? [] : [`--size=${args.size}`]),
    ...(args.reps === 3 ? [] : [`--reps=${args.reps}`]),
    ...(args.partitions === 6 ? [] : [`--partitions=${args.partitions}`]),
    ...(args.processes === 3 ? [] : [`--processes=${args.processes}`]),
    ...(args.concurrency === 100 ? [] : [`--concurrency=${args.concurrency}`])
  ]
  return `npm run bench:cluster${flags.length === 0 ? "" : ` -- ${flags.join(" ")}`}`
}

/** The commit being measured, marked when tracked files have changes (read before the run rewrites the docs). */
const currentCommit = (root: string): string => {
  try {
    const git = (...args: ReadonlyArray<string>) => execFileSync("git", ["-C", root, ...args], { encoding: "utf8" }).trim()
    return `${git("rev-parse", "--short", "HEAD")}${git("status", "--porcelain", "--untracked-files=no") === "" ? "" : "+changes"}`
  } catch {
    return "?"
  }
}

const section = (markedBlock: string) =>
  `## Scaling out: Redis Cluster vs standalone, 1 and N partitions

\`npm run bench:cluster\` rewrites the block below.

${markedBlock}
`

const main = async () => {
  const args = parseArgs(process.argv.slice(2))
  const s = sizes[args.size]!
  const started = performance.now()
  const root = fileURLToPath(new URL("..", import.meta.url))
  const commit = currentCommit(root)
  const loadBefore = loadavg()[0]!
  let standalone: PrivateRedis | undefined
  let cluster: PrivateCluster | undefined
  let workerProcesses: WorkerProcesses | undefined
  const results: Array<TopologyResult> = []
  try {
    standalone = await startRedis()
    cluster = await startCluster()
    workerProcesses = forkWorkerProcesses(args.processes)
    const settings: ClusterSettings = { concurrency: args.concurrency, workerProcesses }
    console.log(`private redis ${standalone.version}: standalone on ${standalone.port} (pid ${standalone.pid}); cluster masters on ` +
      `${cluster.masters.map((m) => `${m.port} (pid ${m.pid})`).join(", ")}; size ${args.size}, ${args.reps} reps, ` +
      `N=${args.partitions} partitions, ${args.processes} worker processes of ${args.concurrency}`)
    const topologies: ReadonlyArray<Topology> = [
      standaloneTopology(standalone, 1),
      standaloneTopology(standalone, args.partitions),
      await clusterTopology(cluster, 1),
      await clusterTopology(cluster, args.partitions)
    ]
    for (const scenario of clusterScenarios) {
      console.log(`\n${scenario.title}`)
      for (const t of topologies) await scenario.run(t, scaled(s, 0.5), settings) // warm-up (also of the worker processes' JIT)
      const runs = new Map<Topology, Array<ClusterMeasurement>>(topologies.map((t) => [t, []]))
      for (let r = 0; r < args.reps; r++) {
        const order = topologies.map((_, k) => topologies[(k + r) % topologies.length]!)
        for (const t of order) {
          const m = await scenario.run(t, s, settings)
          runs.get(t)!.push(m)
          console.log(`  rep ${r + 1} ${`${t.label} P=${t.partitions}`.padEnd(28)} ${Math.round(m.rate).toString().padStart(7)} jobs/s`)
        }
      }
      for (const t of topologies) {
        const ms = runs.get(t)!
        results.push({
          scenario: scenario.id,
          scenarioTitle: scenario.title,
          topology: t.label,
          kind: t.kind,
          partitions: t.partitions,
          spread: t.spread,
          processes: scenario.processes(settings),
          runs: ms,
          rate: median(ms.map((m) => m.rate)),
          clientCpuUs: median(ms.map((m) => m.clientCpuUs)),
          redisCpuUs: t.servers.map((_, k) => median(ms.map((m) => m.redisCpuUs[k]!)))
        })
      }
    }
  } finally {
    await workerProcesses?.close()
    await Promise.all([standalone?.stop(), cluster?.stop()])
  }

  console.log(`\n${clusterConsoleTable(results)}`)
  const date = new Date().toISOString()
  const machine = describeMachine(standalone.version)
  mkdirSync(`${root}bench/results`, { recursive: true })
  const rawFile = `${root}bench/results/${date.replace(/[:.]/g, "-")}-cluster-${args.size}.json`
  writeFileSync(rawFile, JSON.stringify({ machine, commit, args, sizes: s, results }, null, 2))
  console.log(`\nraw results: ${rawFile}`)
  if (args.docs) {
    const markdown = clusterMarkdown(results, {
      machine,
      command: commandOf(args),
      commit,
      date: date.slice(0, 16).replace("T", " ") + " UTC",
      size: args.size,
      reps: args.reps,
      enqueueJobs: s.enqueue,
      drainJobs: s.drain,
      concurrency: args.concurrency,
      durationSeconds: (performance.now() - started) / 1000,
      loadBefore,
      loadAfter: loadavg()[0]!
    })
    writeBlock(`${root}docs/performance.md`, "cluster", markdown, section)
    console.log("wrote docs/performance.md")
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e)
    process.exit(1)
  }
)
