/**
 * `npm run bench`: runs our orchestrator and BullMQ against one private Redis, scenario by scenario,
 * alternating which system goes first in each repetition, and prints (and writes to docs/performance.md
 * and docs/performance.svg) jobs/s, latency percentiles and the ratio ours/BullMQ.
 *
 *   node bench/run.ts [--size=small|default|large] [--reps=N] [--only=id,id] [--side=ours|bullmq] [--no-docs]
 *                     [--no-projection] [--payload-bytes=B] [--payload-growth=B] [--whole-checkpoints] [--turns=N]
 *                     [--bulk=N]
 *
 * `--no-projection` runs our side with `projectMetrics: false` (a worker process that leaves the metrics to
 * another process; here nobody projects them): what the in-process projection costs the turns. It never
 * rewrites the docs, whose figures are the defaults'. Nor does `--payload-bytes=B`, which pads both systems'
 * payloads to about B bytes of JSON (default ~100), nor `--payload-growth=B`, which makes each turn of the
 * multi-turn scenario's payload B bytes longer than the last (a conversation; both systems store each turn's),
 * nor `--whole-checkpoints`, which runs our workers with `checkpointDeltas: false` (every checkpoint the whole payload),
 * nor `--turns=N`, the multi-turn scenario's turns per task (default 5), nor `--bulk=N`, the bulk-enqueue
 * scenario's tasks per call (default 50; `--size=large --bulk=10000` times calls of 10,000 tasks).
 *
 * Each measured run gets a fresh queue (namespace) on a FLUSHALLed server; one warm-up run per system
 * and scenario (a fifth of the size) is excluded; the report gives the median of the repetitions.
 * Raw results go to bench/results/<date>-<size>.json (not committed).
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { bullmq, bullmqMoveToWait } from "./bullmq.ts"
import { perJob, readSlowest, readStats, resetStats, type CommandStats } from "./commandstats.ts"
import { writeBlock } from "./docs-block.ts"
import { describeMachine } from "./machine.ts"
import { ours, oursNotProjecting, useWholeCheckpoints } from "./ours.ts"
import { payloadBytes, setPayloadBytes, setPayloadGrowth } from "./payload.ts"
import { renderSvg } from "./plot.ts"
import { redisCpuSeconds, startRedis, type PrivateRedis } from "./redis-server.ts"
import { bars, consoleTable, markdownBlock, rows, type ScenarioResult, type SideResult } from "./report.ts"
import { type Measurement, type Scenario, scenarios, setBulkSize, setMultiTurnTurns, type Sizes } from "./scenarios.ts"
import { median, medianLatency } from "./stats.ts"
import type { System } from "./system.ts"

const sizes: Readonly<Record<string, Sizes>> = {
  small: {
    enqueueSingle: 500, enqueueBulk: 2500, workersC1: 400, workersC100: 1500, latencyRate: 200, latencySeconds: 2,
    memory: 1000, multiTurnTasks: 150, multiTurnLone: 30
  },
  // Throughput windows of about half a second each on the project's machine (a fifth of that was dominated by
  // start-up and the host's drift: concurrency 100's repetitions spread 0.79–1.17×; fifteenth round).
  default: {
    enqueueSingle: 6000, enqueueBulk: 30000, workersC1: 4500, workersC100: 18000, latencyRate: 200, latencySeconds: 5,
    memory: 3000, multiTurnTasks: 1800, multiTurnLone: 100
  },
  large: {
    enqueueSingle: 8000, enqueueBulk: 50000, workersC1: 6000, workersC100: 30000, latencyRate: 200,
    latencySeconds: 15, memory: 12000, multiTurnTasks: 2500, multiTurnLone: 250
  }
}

const scale = (s: Sizes, k: number): Sizes => ({
  enqueueSingle: Math.ceil(s.enqueueSingle * k),
  enqueueBulk: Math.ceil(s.enqueueBulk * k),
  workersC1: Math.ceil(s.workersC1 * k),
  workersC100: Math.ceil(s.workersC100 * k),
  latencyRate: s.latencyRate,
  latencySeconds: Math.max(1, s.latencySeconds * k),
  memory: Math.ceil(s.memory * k),
  multiTurnTasks: Math.ceil(s.multiTurnTasks * k),
  multiTurnLone: Math.ceil(s.multiTurnLone * k)
})

const parseArgs = (argv: ReadonlyArray<string>) => {
  const get = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
  const size = get("size") ?? "default"
  if (sizes[size] === undefined) throw new Error(`--size must be one of ${Object.keys(sizes).join(", ")}`)
  const reps = Number(get("reps") ?? 3)
  if (!Number.isInteger(reps) || reps < 1) throw new Error("--reps must be a positive integer")
  const only = get("only")?.split(",")
  const side = get("side")
  const projection = !argv.includes("--no-projection")
  const payload = get("payload-bytes") === undefined ? undefined : Number(get("payload-bytes"))
  if (payload !== undefined && !(Number.isInteger(payload) && payload > 0)) throw new Error("--payload-bytes must be a positive integer")
  const growth = get("payload-growth") === undefined ? undefined : Number(get("payload-growth"))
  if (growth !== undefined && !(Number.isInteger(growth) && growth > 0)) throw new Error("--payload-growth must be a positive integer")
  const whole = argv.includes("--whole-checkpoints")
  const turns = get("turns") === undefined ? undefined : Number(get("turns"))
  if (turns !== undefined && !(Number.isInteger(turns) && turns >= 1)) throw new Error("--turns must be a positive integer")
  const bulk = get("bulk") === undefined ? undefined : Number(get("bulk"))
  if (bulk !== undefined && !(Number.isInteger(bulk) && bulk >= 1)) throw new Error("--bulk must be a positive integer")
  const docs = projection && payload === undefined && growth === undefined && !whole && turns === undefined &&
    bulk === undefined && !argv.includes("--no-docs")
  return { size, reps, only, side, projection, payload, growth, whole, turns, bulk, docs }
}

let runCounter = 0

/** One measured (or warm-up) run of a scenario for a system, on a flushed server and a fresh queue. */
const runOnce = async (
  redis: PrivateRedis,
  scenario: Scenario,
  system: System,
  s: Sizes
): Promise<{ m: Measurement; stats: CommandStats }> => {
  await redis.admin.flushall()
  const run = await system.open({
    url: redis.url,
    port: redis.port,
    runId: `b${++runCounter}`,
    continuation: system.continuation
  })
  try {
    let cpu0 = process.cpuUsage()
    let redisCpu0 = 0
    const m = await scenario.run({
      run,
      port: redis.port,
      admin: redis.admin,
      sizes: s,
      markStats: async () => {
        await resetStats(redis.admin)
        redisCpu0 = await redisCpuSeconds(redis.admin)
        cpu0 = process.cpuUsage()
      }
    })
    const cpu = process.cpuUsage(cpu0)
    const redisCpu = (await redisCpuSeconds(redis.admin)) - redisCpu0
    const values = {
      ...m.values,
      clientCpuUsPerJob: (cpu.user + cpu.system) / m.jobs,
      clientSystemCpuUsPerJob: cpu.system / m.jobs,
      redisCpuUsPerJob: (redisCpu * 1e6) / m.jobs,
      loadAverage: loadavg()[0]!
    }
    return { m: { ...m, values, slowest: await readSlowest(redis.admin) }, stats: await readStats(redis.admin) }
  } finally {
    await run.close()
  }
}

const main = async () => {
  const args = parseArgs(process.argv.slice(2))
  if (args.payload !== undefined) setPayloadBytes(args.payload)
  if (args.growth !== undefined) setPayloadGrowth(args.growth)
  if (args.whole) useWholeCheckpoints()
  if (args.turns !== undefined) setMultiTurnTurns(args.turns)
  if (args.bulk !== undefined) setBulkSize(args.bulk)
  const started = performance.now()
  const s = sizes[args.size]!
  const redis = await startRedis()
  const machine = describeMachine(redis.version)
  console.log(`private redis ${redis.version} on port ${redis.port} (pid ${redis.pid}); size ${args.size}, ${args.reps} reps`)
  const results: Array<ScenarioResult> = []
  try {
    for (const scenario of scenarios) {
      if (args.only !== undefined && !args.only.includes(scenario.id)) continue
      const systems = [args.projection ? ours : oursNotProjecting, bullmq, ...(scenario.multiTurn === true ? [bullmqMoveToWait] : [])]
        .filter((sys) => args.side === undefined || sys.side === args.side)
      console.log(`\n${scenario.title}`)
      for (const sys of systems) await runOnce(redis, scenario, sys, scale(s, 0.2)) // warm-up
      const perSystem = new Map<System, Array<{ m: Measurement; stats: CommandStats }>>(systems.map((sys) => [sys, []]))
      for (let r = 0; r < args.reps; r++) {
        const order = systems.map((_, k) => systems[(k + r) % systems.length]!)
        for (const sys of order) {
          const out = await runOnce(redis, scenario, sys, s)
          perSystem.get(sys)!.push(out)
          const main = out.m.latency[scenario.mainLatency]
          console.log(`  rep ${r + 1} ${sys.label.padEnd(20)} ${Math.round(out.m.rate).toString().padStart(7)} ${scenario.rateUnit}` +
            (main === undefined ? "" : `  ${scenario.mainLatency} p50 ${main.p50.toFixed(2)} p99 ${main.p99.toFixed(2)} ms`) +
            (out.m.values.bytesPerTask === undefined ? "" : `  ${Math.round(out.m.values.bytesPerTask)} B/task`) +
            `  CPU µs/job client ${Math.round(out.m.values.clientCpuUsPerJob ?? 0)} redis ${Math.round(out.m.values.redisCpuUsPerJob ?? 0)}` +
            `, script calls/job ${perJob(out.stats, out.m.jobs).scriptCallsPerJob.toFixed(2)}` +
            (out.m.slowest !== undefined && out.m.slowest.us > 0 ? `, longest command ${(out.m.slowest.us / 1000).toFixed(1)} ms (${out.m.slowest.command})` : ""))
        }
      }
      const sides: Array<SideResult> = systems.map((sys) => {
        const outs = perSystem.get(sys)!
        const ms = outs.map((o) => o.m)
        const keys = Object.keys(ms[0]!.latency)
        const valueKeys = Object.keys(ms[0]!.values)
        const rate = median(ms.map((m) => m.rate))
        const mid = outs.reduce((a, o) => (Math.abs(o.m.rate - rate) < Math.abs(a.m.rate - rate) ? o : a))
        return {
          label: sys.label,
          side: sys.side,
          runs: ms,
          rate,
          latency: Object.fromEntries(keys.map((k) => [k, medianLatency(ms.map((m) => m.latency[k]))!])),
          values: Object.fromEntries(valueKeys.map((k) => [k, median(ms.map((m) => m.values[k]!))])),
          breakdown: mid.m.breakdown,
          stats: mid.stats,
          jobs: mid.m.jobs
        }
      })
      results.push({ id: scenario.id, title: scenario.title, rateUnit: scenario.rateUnit, sides })
    }
  } finally {
    await redis.stop()
  }

  const complete = results.every((r) => r.sides.some((d) => d.side === "ours") && r.sides.some((d) => d.side === "bullmq"))
  if (complete) console.log(`\n${consoleTable(rows(results))}`)
  const date = new Date().toISOString()
  const root = fileURLToPath(new URL("..", import.meta.url))
  mkdirSync(`${root}bench/results`, { recursive: true })
  const rawFile = `${root}bench/results/${date.replace(/[:.]/g, "-")}-${args.size}.json`
  writeFileSync(rawFile, JSON.stringify({ machine, args, sizes: s, results }, null, 2))
  console.log(`\nraw results: ${rawFile}`)

  if (args.docs && complete && args.only === undefined) {
    const flags = [...(args.size === "default" ? [] : [`--size=${args.size}`]), ...(args.reps === 3 ? [] : [`--reps=${args.reps}`])]
    const command = `npm run bench${flags.length === 0 ? "" : ` -- ${flags.join(" ")}`}`
    const meta = {
      machine, command, size: args.size, reps: args.reps, date: date.slice(0, 16).replace("T", " ") + " UTC",
      payloadBytes: payloadBytes(), durationSeconds: (performance.now() - started) / 1000
    }
    const svg = renderSvg(bars(results), "factorial-ts vs BullMQ", `${machine.cores} cores, Redis ${machine.redis}, size ${args.size}; >1 = ours better`)
    mkdirSync(`${root}docs`, { recursive: true })
    writeFileSync(`${root}docs/performance.svg`, svg)
    writeBlock(`${root}docs/performance.md`, "results", markdownBlock(results, meta, "performance.svg"))
    console.log(`wrote docs/performance.md and docs/performance.svg`)
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e)
    process.exit(1)
  }
)
