/**
 * Compares two raw result files of `bench/run.ts` (e.g. before and after a change), for our side:
 * median rate, client and Redis CPU per job, script calls per job and bytes per task, as a markdown table.
 *
 *   node bench/compare.ts bench/results/<before>.json bench/results/<after>.json
 */
import { readFileSync } from "node:fs"
import type { ScenarioResult, SideResult } from "./report.ts"

interface RawRun {
  readonly results: ReadonlyArray<ScenarioResult>
}

const [beforeFile, afterFile] = process.argv.slice(2)
if (beforeFile === undefined || afterFile === undefined) throw new Error("usage: node bench/compare.ts <before.json> <after.json>")
const load = (f: string) => JSON.parse(readFileSync(f, "utf8")) as RawRun
const before = load(beforeFile)
const after = load(afterFile)

const ours = (r: RawRun, id: string): SideResult | undefined =>
  r.results.find((s) => s.id === id)?.sides.find((d) => d.side === "ours")
const bull = (r: RawRun, id: string): SideResult | undefined => {
  const sides = r.results.find((s) => s.id === id)?.sides.filter((d) => d.side === "bullmq") ?? []
  return sides.length === 0 ? undefined : sides.reduce((a, b) => (b.rate > a.rate ? b : a))
}
const scripts = (s: SideResult | undefined) =>
  s === undefined ? NaN : ((s.stats.evalsha?.calls ?? 0) + (s.stats.eval?.calls ?? 0) + (s.stats.fcall?.calls ?? 0)) / s.jobs
const n = (x: number | undefined, digits = 0) =>
  x === undefined || !Number.isFinite(x) ? "–" : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
const pair = (a: number | undefined, b: number | undefined, digits = 0) => `${n(a, digits)} → ${n(b, digits)}`

const rows: Array<string> = [
  "| scenario | ours rate | ours client CPU µs/job | ours Redis CPU µs/job | ours script calls/job | ours bytes/task | ours/BullMQ rate (same run) |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
]
for (const s of after.results) {
  const b = ours(before, s.id)
  const a = ours(after, s.id)
  const ratio = (r: RawRun) => (ours(r, s.id)?.rate ?? NaN) / (bull(r, s.id)?.rate ?? NaN)
  rows.push(`| ${s.title.replace(/\s*\(.*\)$/, "")} | ${pair(b?.rate, a?.rate)} | ${pair(b?.values.clientCpuUsPerJob, a?.values.clientCpuUsPerJob)} | ` +
    `${pair(b?.values.redisCpuUsPerJob, a?.values.redisCpuUsPerJob)} | ${pair(scripts(b), scripts(a), 2)} | ` +
    `${s.id === "memory" ? pair(b?.values.bytesPerTask, a?.values.bytesPerTask) : "–"} | ${pair(ratio(before), ratio(after), 2)} |`)
}
console.log(rows.join("\n"))
