/**
 * Summarizes a V8 CPU profile (`node --cpu-prof`): self time by function and by package/file, so the
 * client-side costs of a scenario can be read without a browser.
 *
 *   node --cpu-prof --cpu-prof-dir=bench/results/prof bench/run.ts --only=workers-c100 --side=ours --no-docs
 *   node bench/profile-summary.ts bench/results/prof/<file>.cpuprofile [top]
 */
import { readFileSync } from "node:fs"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const file = process.argv[2]
if (file === undefined) throw new Error("usage: node bench/profile-summary.ts <file.cpuprofile> [top]")
const top = Number(process.argv[3] ?? 25)
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map<number, number>()
profile.samples.forEach((id, k) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[k] ?? 0)))
const total = [...self.values()].reduce((a, b) => a + b, 0)

const where = (url: string): string => {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (m !== null) return m[1]!
  if (url.startsWith("node:")) return url
  const local = /\/(src|streams|projections|bench)\/[^/]+$/.exec(url)
  return local !== null ? local[0].slice(1) : url === "" ? "(native/vm)" : url
}

const fn = new Map<string, number>()
const pkg = new Map<string, number>()
for (const [id, us] of self) {
  const n = byId.get(id)!
  const f = n.callFrame
  const name = `${f.functionName || "(anonymous)"} ${where(f.url)}:${f.lineNumber + 1}`
  fn.set(name, (fn.get(name) ?? 0) + us)
  const p = f.functionName === "(garbage collector)" ? "(gc)" : f.functionName === "(idle)" ? "(idle)" : f.functionName === "(program)" ? "(program)" : where(f.url)
  pkg.set(p, (pkg.get(p) ?? 0) + us)
}
const show = (m: Map<string, number>, n: number) =>
  [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, us]) => `${(us / 1000).toFixed(0).padStart(7)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`).join("\n")
console.log(`total ${(total / 1000).toFixed(0)} ms\n\nby package / file:\n${show(pkg, 20)}\n\nby function (self):\n${show(fn, top)}`)

// Who causes the top native costs: the nearest ancestor frame in ioredis or project code, per hot function.
const parent = new Map<number, number>()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const interesting = (url: string) => url.startsWith("file:") && /node_modules\/ioredis|\/(src|streams|bench)\//.test(url)
for (const hot of (process.argv[4] ?? "writeUtf8String").split(",")) {
  const callers = new Map<string, number>()
  for (const [id, us] of self) {
    if (byId.get(id)!.callFrame.functionName !== hot) continue
    let p = parent.get(id)
    const chain: Array<string> = []
    while (p !== undefined && chain.length < 3) {
      const f = byId.get(p)!.callFrame
      if (interesting(f.url)) chain.push(`${f.functionName || "(anonymous)"} ${where(f.url)}:${f.lineNumber + 1}`)
      p = parent.get(p)
    }
    const key = chain.join(" < ") || "(no project/ioredis frame)"
    callers.set(key, (callers.get(key) ?? 0) + us)
  }
  if (callers.size > 0) console.log(`\ncallers of ${hot}:\n${show(callers, 12)}`)
}
