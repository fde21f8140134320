/**
 * `factorial-ts` against a real Redis Cluster (the vitest `cluster` project: 3 masters, 4 partitions), as
 * real processes: `export | import` into a fresh namespace (export with `--cluster-nodes`, import with
 * `REDIS_CLUSTER_NODES`) gives the same histories and a namespace that verifies clean, and `rebuild --fix`
 * repairs a corrupted projection. The namespace's keys spread over the masters, so a pipeline or MULTI
 * that crossed partitions would fail here. One round of three processes (each costs seconds of start-up).
 * Skipped on a standalone Redis (test/cli/Cli.test.ts covers the commands there).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { taskKeys } from "../../streams/Keys.ts"
import { clusterNodes, freshKeyspace, onCluster } from "../support/TestRedis.ts"
import { replayTask, verifyAll } from "../../src/audit/index.ts"
import { redisDo, runtimeFor, seed, type Runtime } from "../audit/fixtures.ts"

const root = resolve(import.meta.dirname, "../..")
const nodes = clusterNodes.map((n) => `${n.host}:${n.port}`).join(",")
// Only the flag (or, where a call says so, REDIS_CLUSTER_NODES) chooses the Redis.
const baseEnv = (() => {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${root}/node_modules/.bin:${process.env.PATH ?? ""}` }
  delete env.REDIS_URL
  delete env.REDIS_CLUSTER_NODES
  return env
})()

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const start = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}) =>
  spawn("node", ["src/cli/main.ts", ...args], { cwd: root, env: { ...baseEnv, ...env } })

const result = (child: ChildProcess): Promise<Result> =>
  new Promise((done, fail) => {
    let stdout = ""
    let stderr = ""
    child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })

const runtimes: Array<Runtime> = []
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.dispose()))
})

describe.runIf(onCluster)("factorial-ts --cluster-nodes (Redis Cluster, several partitions)", { timeout: 120_000 }, () => {
  it("export | import: same histories, clean verify; rebuild --fix repairs a corrupted hash", async () => {
    const ks = freshKeyspace()
    expect(ks.partitions).toBeGreaterThan(1)
    const target = { ...freshKeyspace(), partitions: ks.partitions }
    const source = runtimeFor(ks)
    const copy = runtimeFor(target)
    runtimes.push(source, copy)
    const { ids, t } = await source.runPromise(seed("k"))
    await source.runPromise(redisDo((c) => c.hset(taskKeys(ks, t("done")).task, "status", "failed", "turns", "9")))

    // The seeded namespace has no meta hash: --partitions says how many it has (import records it for the copy).
    const flags = (namespace: string) => ["--namespace", namespace, "--partitions", String(ks.partitions)]
    const exporter = start(["--cluster-nodes", nodes, ...flags(ks.namespace), "export", "--batch-size", "3", "--page-size", "2"])
    const importer = start([...flags(target.namespace), "import", "--json", "--batch-size", "4"], { REDIS_CLUSTER_NODES: nodes })
    exporter.stdout.pipe(importer.stdin)
    const rebuilder = start(["--cluster-nodes", nodes, ...flags(ks.namespace), "rebuild", "--fix", "--json"])
    const [exported, imported, rebuilt] = await Promise.all([result(exporter), result(importer), result(rebuilder)])

    expect(exported.code, exported.stderr).toBe(0)
    expect(exported.stderr).toContain(`exported ${ids.length} tasks`)
    expect(imported.code, imported.stderr).toBe(0)
    expect(JSON.parse(imported.stdout)).toMatchObject({ tasks: ids.length })
    expect(rebuilt.code, rebuilt.stderr).toBe(0)
    expect(JSON.parse(rebuilt.stdout)).toMatchObject({ checked: ids.length, divergent: 1, fixed: 1, raced: 0 })

    for (const id of [t("done"), t("expired"), t("backoff")]) {
      expect(await copy.runPromise(replayTask(id)), id).toEqual(await source.runPromise(replayTask(id)))
    }
    expect(await copy.runPromise(verifyAll())).toMatchObject({ checked: ids.length - 1, divergent: 0 })
    expect(await source.runPromise(verifyAll())).toMatchObject({ checked: ids.length - 1, divergent: 0 })
  })
})
