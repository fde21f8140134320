/**
 * Benchmark: memory of `factorial-ts export` on 100,000 events (20,000 tasks × 5 events: enqueued,
 * claimed, turn completed, claimed, completed), written through `TaskStore.executeMany` pipelines into
 * a private namespace (deleted at the end).
 *
 * The export runs as the real CLI in a child process, writing to a file, and reports its own peak RSS
 * (`process.resourceUsage().maxRSS`). The same CLI exporting an empty window gives the baseline (Node,
 * Effect, ioredis loaded): bounded memory means the two are close, whatever the number of tasks.
 *
 *   npm run bench:export                 # REDIS_URL, default redis://127.0.0.1:6379
 *   node bench/export-memory.ts --tasks 50000 --heap-cap 48
 *
 * A third run caps the V8 old space (`--max-old-space-size`, default 48 MB): it completes only if the
 * export's heap does not grow with the data; the uncapped run's RSS mostly shows how lazily V8 collects.
 */
import { spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Effect, Layer } from "effect"
import type { TaskCommand } from "../projections/TaskDecider.ts"
import { RedisClient } from "../streams/RedisClient.ts"
import { TaskStore } from "../src/TaskStore.ts"

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}
const tasks = arg("tasks", 20_000)
const batch = arg("batch", 1_000)
const heapCapMb = arg("heap-cap", 48)
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const namespace = `bench-export-${randomUUID().slice(0, 8)}`
const keyspace = { namespace, partitions: 1 }
const root = resolve(import.meta.dirname, "..")

const layer = TaskStore.layer(keyspace).pipe(Layer.provideMerge(RedisClient.layer({ url: redisUrl })))

/** The 5 commands of one task, by step. */
const step = (s: number, taskId: string, now: number): TaskCommand => {
  switch (s) {
    case 0:
      return {
        _tag: "Enqueue",
        taskId,
        agent: "bench",
        ownerId: "owner-1",
        payload: { messages: [{ role: "user", content: `question ${taskId}` }] },
        maxRetries: 3,
        now
      }
    case 1:
      return { _tag: "Claim", taskId, lease: 0, worker: "bench-worker", now }
    case 2:
      return {
        _tag: "CompleteTurn",
        taskId,
        lease: 1,
        payload: {
          messages: [{ role: "user", content: `question ${taskId}` }, { role: "assistant", content: "thinking about it" }]
        },
        steeringApplied: 0,
        now
      }
    case 3:
      return { _tag: "Claim", taskId, lease: 1, worker: "bench-worker", now }
    default:
      return { _tag: "Complete", taskId, lease: 2, output: { answer: `the answer to ${taskId}` }, steeringApplied: 0, now }
  }
}

const seed = Effect.gen(function*() {
  const store = yield* TaskStore
  const ids = Array.from({ length: tasks }, (_, i) => `bench-${String(i).padStart(6, "0")}`)
  for (let s = 0; s < 5; s++) {
    for (let i = 0; i < ids.length; i += batch) {
      const now = Date.now()
      const outcomes = yield* store.executeMany(ids.slice(i, i + batch).map((id) => ({ command: step(s, id, now) })))
      const rejected = outcomes.filter((o) => !("values" in o))
      if (rejected.length > 0) return yield* Effect.die(new Error(`step ${s}: ${rejected.length} rejected, e.g. ${String(rejected[0])}`))
    }
  }
  return ids.length * 5
})

const cleanup = Effect.gen(function*() {
  const redis = yield* RedisClient
  let cursor = "0"
  do {
    const [next, keys] = yield* redis.use("scan", (c) => c.scan(cursor, "MATCH", `{${namespace}*`, "COUNT", 1000))
    if (keys.length > 0) yield* redis.use("unlink", (c) => c.unlink(...keys))
    cursor = next
  } while (cursor !== "0")
})

interface ExportRun {
  readonly code: number | null
  readonly peakRssMb: number
  readonly seconds: number
  readonly bytes: number
  readonly lines: number
}

/** Runs `factorial-ts export` as a child process into a file; its stderr reports its peak RSS. */
const exportRun = (extra: ReadonlyArray<string>, file: string, nodeFlags: ReadonlyArray<string> = []): Promise<ExportRun> =>
  new Promise((done, fail) => {
    const started = Date.now()
    const child = spawn(
      process.execPath,
      [...nodeFlags, "src/cli/main.ts", "--redis-url", redisUrl, "--namespace", namespace, "export", "--no-progress", ...extra],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] }
    )
    let stderr = ""
    const chunks: Array<Buffer> = []
    child.stdout.on("data", (d: Buffer) => chunks.push(d))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("error", fail)
    child.on("close", (code) => {
      writeFileSync(file, Buffer.concat(chunks))
      const text = readFileSync(file, "utf8")
      const rss = /peak RSS ([\d.]+) MB/.exec(stderr)
      if (code !== 0 || rss === null) return fail(new Error(`export exited ${code}: ${stderr}`))
      done({
        code,
        peakRssMb: Number(rss[1]),
        seconds: (Date.now() - started) / 1000,
        bytes: statSync(file).size,
        lines: text === "" ? 0 : text.trimEnd().split("\n").length
      })
    })
  })

const main = Effect.gen(function*() {
  const t0 = Date.now()
  const events = yield* seed
  const seedSeconds = (Date.now() - t0) / 1000
  console.error(`seeded ${tasks} tasks, ${events} events in ${seedSeconds.toFixed(1)}s (namespace ${namespace})`)
  const dir = mkdtempSync(join(tmpdir(), "fx-bench-"))
  try {
    const baseline = yield* Effect.promise(() => exportRun(["--since", "now"], join(dir, "empty.jsonl")))
    const full = yield* Effect.promise(() => exportRun([], join(dir, "all.jsonl")))
    if (full.lines !== tasks) return yield* Effect.die(new Error(`exported ${full.lines} lines, expected ${tasks}`))
    // The same export with the V8 heap capped: it completes only if its memory does not grow with the data.
    const capped = yield* Effect.promise(() => exportRun([], join(dir, "capped.jsonl"), [`--max-old-space-size=${heapCapMb}`]))
    if (capped.lines !== tasks) return yield* Effect.die(new Error(`capped export: ${capped.lines} lines`))
    const result = {
      date: new Date().toISOString(),
      node: process.version,
      tasks,
      events,
      seedSeconds,
      export: full,
      emptyExportBaseline: baseline,
      cappedHeapExport: { ...capped, maxOldSpaceSizeMb: heapCapMb },
      command: `node src/cli/main.ts --namespace <ns> export > all.jsonl`
    }
    console.log(JSON.stringify(result, null, 2))
    console.error(
      `export of ${events} events (${tasks} tasks, ${(full.bytes / 1e6).toFixed(1)} MB of JSON Lines) in ` +
        `${full.seconds.toFixed(1)}s: peak RSS ${full.peakRssMb} MB (empty export: ${baseline.peakRssMb} MB; ` +
        `with the heap capped at ${heapCapMb} MB: ${capped.peakRssMb} MB)`
    )
    mkdirSync(join(root, "bench/results"), { recursive: true })
    writeFileSync(join(root, "bench/results/export-memory.json"), JSON.stringify(result, null, 2) + "\n")
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}).pipe(Effect.ensuring(cleanup.pipe(Effect.ignore)), Effect.provide(layer))

await Effect.runPromise(main)
