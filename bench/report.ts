/**
 * Turns the medians into the report: the console table, the markdown block written into
 * docs/performance.md (between its bench markers, so the hand-written analysis around it stays), and
 * the bars of the plot.
 */
import { perJob, SLOW_US, type CommandStats, type Slowest } from "./commandstats.ts"
import { type Machine, machineLine } from "./machine.ts"
import type { Bar } from "./plot.ts"
import { type Measurement, taskLatencyName } from "./scenarios.ts"
import { type Latency, median } from "./stats.ts"

export interface SideResult {
  readonly label: string
  readonly side: "ours" | "bullmq"
  readonly runs: ReadonlyArray<Measurement>
  readonly rate: number
  readonly latency: Readonly<Record<string, Latency>>
  readonly values: Readonly<Record<string, number>>
  readonly breakdown: Measurement["breakdown"]
  /** Command statistics of the median-rate repetition. */
  readonly stats: CommandStats
  readonly jobs: number
}

export interface ScenarioResult {
  readonly id: string
  readonly title: string
  readonly rateUnit: string
  readonly sides: ReadonlyArray<SideResult>
}

export interface Row {
  readonly scenario: string
  readonly metric: string
  readonly ours: string
  readonly bullmq: string
  readonly ratio: string
  readonly bar?: Bar
}

const f0 = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–")
const ms = (n: number) => (!Number.isFinite(n) ? "–" : n < 10 ? n.toFixed(2) : n.toFixed(1))
const lat = (l: Latency | undefined) => (l === undefined ? "–" : `${ms(l.p50)} / ${ms(l.p99)}`)
const x = (r: number) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : "–")

const oursOf = (s: ScenarioResult) => s.sides.find((d) => d.side === "ours")!
/** BullMQ's best variant by rate (the multi-turn scenario runs two). */
const bullOf = (s: ScenarioResult) =>
  s.sides.filter((d) => d.side === "bullmq").reduce((a, b) => (b.rate > a.rate ? b : a))

const short = (title: string) => title.replace(/\s*\(.*\)$/, "")

/**
 * Ours/BullMQ's rate per repetition: in a repetition the two systems run back to back, so what the machine's
 * speed does over the whole run (it has more than doubled within one) cancels out of each ratio. The report
 * gives their median, and their range.
 */
const pairedRatios = (o: SideResult, b: SideResult): ReadonlyArray<number> =>
  o.runs.map((r, i) => r.rate / (b.runs[i]?.rate ?? Number.NaN)).filter(Number.isFinite)

const rateRatio = (o: SideResult, b: SideResult): { readonly factor: number; readonly text: string } => {
  const ratios = pairedRatios(o, b)
  if (ratios.length === 0) return { factor: o.rate / b.rate, text: x(o.rate / b.rate) }
  const factor = median(ratios)
  return { factor, text: ratios.length < 2 ? x(factor) : `${x(factor)} (${x(Math.min(...ratios))}–${x(Math.max(...ratios))})` }
}

/** Plot labels. */
const barName: Readonly<Record<string, string>> = {
  "enqueue-single": "1 single enqueue",
  "enqueue-bulk": "2 bulk enqueue",
  "workers-c1": "3 concurrency 1",
  "workers-c100": "4 concurrency 100",
  latency: "5 latency",
  memory: "6 memory",
  "multi-turn": "7 multi-turn"
}

export const rows = (results: ReadonlyArray<ScenarioResult>): ReadonlyArray<Row> => {
  const out: Array<Row> = []
  for (const s of results) {
    const o = oursOf(s)
    const b = bullOf(s)
    const name = barName[s.id] ?? short(s.title)
    const bLabel = b.label === "bullmq" ? "" : `, BullMQ ${b.label.replace(/^bullmq \((.*)\)$/, "$1")}`
    const rateRow = (metric: string): Row => {
      const r = rateRatio(o, b)
      return {
        scenario: s.title,
        metric: `${metric}${bLabel}`,
        ours: f0(o.rate),
        bullmq: f0(b.rate),
        ratio: r.text,
        bar: { label: `${name}: ${s.rateUnit}`, factor: r.factor, note: "ours/BullMQ" }
      }
    }
    const latRow = (key: string, barIt: boolean): Row => ({
      scenario: s.title,
      metric: `${key} p50 / p99 (ms)`,
      ours: lat(o.latency[key]),
      bullmq: lat(b.latency[key]),
      ratio: `${x((o.latency[key]?.p50 ?? NaN) / (b.latency[key]?.p50 ?? NaN))} / ${x((o.latency[key]?.p99 ?? NaN) / (b.latency[key]?.p99 ?? NaN))}`,
      ...(barIt
        ? {
          bar: {
            label: `${name}: ${key} p99`,
            factor: (b.latency[key]?.p99 ?? NaN) / (o.latency[key]?.p99 ?? NaN),
            note: "BullMQ/ours"
          }
        }
        : {})
    })
    switch (s.id) {
      case "enqueue-single":
      case "enqueue-bulk":
        out.push(rateRow("throughput (jobs/s)"), latRow("call", false))
        break
      case "workers-c1":
      case "workers-c100":
        out.push(rateRow("throughput (jobs/s)"), latRow("start→complete", false))
        break
      case "latency":
        out.push(latRow("enqueue→start", true), latRow("enqueue→complete", true), {
          scenario: s.title,
          metric: "completion rate achieved (jobs/s)",
          ours: f0(o.rate),
          bullmq: f0(b.rate),
          ratio: x(o.rate / b.rate)
        })
        break
      case "memory": {
        const ob = o.values.bytesPerTask ?? NaN
        const bb = b.values.bytesPerTask ?? NaN
        out.push({
          scenario: s.title,
          metric: "bytes per finished task / job (used_memory delta)",
          ours: f0(ob),
          bullmq: f0(bb),
          ratio: x(ob / bb),
          bar: { label: `${name}: bytes/task`, factor: bb / ob, note: "BullMQ/ours" }
        })
        break
      }
      case "multi-turn":
        out.push(rateRow("throughput (turns/s)"), latRow("turn→next turn", true), latRow(taskLatencyName(), false))
        for (const other of s.sides.filter((d) => d.side === "bullmq" && d !== b)) {
          out.push({
            scenario: s.title,
            metric: `throughput (turns/s), BullMQ ${other.label === "bullmq" ? "readd" : other.label.replace(/^bullmq \((.*)\)$/, "$1")}`,
            ours: f0(o.rate),
            bullmq: f0(other.rate),
            ratio: rateRatio(o, other).text
          })
        }
        break
    }
  }
  return out
}

export const table = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map((h, k) => (k < 2 ? "---" : "---:")).join(" | ")} |`,
    ...body.map((r) => `| ${r.join(" | ")} |`)
  ].join("\n")

/** A plain-text table for the console: the first two columns left-aligned, the others right-aligned. */
export const alignedTable = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, k) => Math.max(h.length, ...body.map((r) => r[k]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, k) => (k < 2 ? c.padEnd(widths[k]!) : c.padStart(widths[k]!))).join("  ")
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n")
}

export const consoleTable = (rs: ReadonlyArray<Row>): string =>
  alignedTable(["scenario", "metric", "ours", "bullmq", "ours/bullmq"], rs.map((r) => [short(r.scenario), r.metric, r.ours, r.bullmq, r.ratio]))

export interface ReportMeta {
  readonly machine: Machine
  readonly command: string
  readonly size: string
  readonly reps: number
  readonly date: string
  readonly payloadBytes: number
  readonly durationSeconds: number
}

export const markdownBlock = (results: ReadonlyArray<ScenarioResult>, meta: ReportMeta, plotFile: string): string => {
  const rs = rows(results)
  const out: Array<string> = []
  out.push(`Generated by \`${meta.command}\` on ${meta.date} (size \`${meta.size}\`, ${meta.reps} repetitions per system ` +
    `and scenario, alternating which system goes first, after one excluded warm-up run each; medians of the ` +
    `repetitions; throughput ratios are the median, and in brackets the range, of the repetitions' own ratios; payload ${meta.payloadBytes} bytes of JSON; the whole run took ${Math.round(meta.durationSeconds)} s).`)
  out.push("")
  out.push(`Machine: ${machineLine(meta.machine)}.`)
  out.push("")
  out.push(table(["scenario", "metric", "ours", "BullMQ", "ours/BullMQ"], rs.map((r) => [short(r.scenario), r.metric, r.ours, r.bullmq, r.ratio])))
  out.push("")
  out.push(`![ours relative to BullMQ](${plotFile})`)
  out.push("")
  const mem = results.find((s) => s.id === "memory")
  if (mem !== undefined) {
    out.push("Memory by key kind (MEMORY USAGE of every key after the run, divided by the tasks; the used_memory delta above also counts the keyspace's own overhead):")
    out.push("")
    for (const side of mem.sides) {
      out.push(table([`${side.label}: key`, "keys", "bytes per task"], (side.breakdown ?? []).slice(0, 8).map((b) => [`\`${b.kind}\``, String(b.keys), f0(b.bytesPerTask)])))
      out.push("")
    }
  }
  out.push("CPU and Redis work per job over the measured window (client CPU: this Node process, `process.cpuUsage`, observer " +
    "included; redis CPU: the server's used_cpu_user+sys; both are medians and much less sensitive to other load on the " +
    "machine than wall-clock rates). Script calls, server time in scripts and the commands (those scripts ran " +
    "included) come from INFO commandstats of the median repetition:")
  out.push("")
  const statRows: Array<Array<string>> = []
  for (const s of results) {
    for (const side of s.sides) {
      const p = perJob(side.stats, side.jobs)
      const top = p.rows.filter((r) => !["evalsha", "eval", "fcall"].includes(r.cmd)).slice(0, 5)
        .map((r) => `${r.cmd} ${r.callsPerJob.toFixed(2)}`).join(", ")
      const cpu = (k: string) => (side.values[k] === undefined ? "–" : f0(side.values[k]!))
      statRows.push([short(s.title), side.label, cpu("clientCpuUsPerJob"), cpu("redisCpuUsPerJob"), p.scriptCallsPerJob.toFixed(2), p.scriptUsecPerJob.toFixed(1), longest(side.runs), top])
    }
  }
  out.push(table(["scenario", "system", "client CPU µs / job", "redis CPU µs / job", "script calls / job", "µs in scripts / job", `longest command (ms; max of the repetitions, SLOWLOG ≥ ${SLOW_US / 1000} ms)`, "commands by time (calls / job)"], statRows))
  return out.join("\n")
}

/** The longest single command over a system's repetitions, and what it was. */
const longest = (runs: ReadonlyArray<Measurement>): string => {
  const worst = runs.reduce<Slowest | undefined>((a, m) => (m.slowest !== undefined && m.slowest.us > (a?.us ?? 0) ? m.slowest : a), undefined)
  return worst === undefined ? `< ${SLOW_US / 1000}` : `${(worst.us / 1000).toFixed(1)} (${worst.command})`
}

export const bars = (results: ReadonlyArray<ScenarioResult>): ReadonlyArray<Bar> =>
  rows(results).flatMap((r) => (r.bar === undefined || !Number.isFinite(r.bar.factor) ? [] : [r.bar]))
