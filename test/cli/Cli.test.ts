/**
 * `factorial-ts` as a user runs it: real processes (`node src/cli/main.ts`, Node 24 from
 * node_modules/.bin) against a real Redis. Exit codes (0 ok, 1 failure/divergence, 2 bad arguments,
 * 3 not found), output on stdout, errors on stderr.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { taskKeys } from "../../streams/Keys.ts"
import { libraryVersion } from "../../streams/Scripts.ts"
import { defineAgent, Done } from "../../src/Agent.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { freshKeyspace, redisUrl } from "../support/TestRedis.ts"
import { redisDo, runtimeFor, seed, type Runtime } from "../audit/fixtures.ts"

const root = resolve(import.meta.dirname, "../..")
const env = { ...process.env, PATH: `${root}/node_modules/.bin:${process.env.PATH ?? ""}`, REDIS_URL: redisUrl }

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const cli = (
  args: ReadonlyArray<string>,
  options: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}
): Promise<Result> =>
  new Promise((done, fail) => {
    const child = spawn("node", ["src/cli/main.ts", ...args], {
      cwd: root,
      env: { ...env, ...options.env },
      stdio: ["pipe", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 90_000)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
    child.stdin.end(options.input ?? "")
  })

/** Runs CLI calls at most `limit` at a time (each is a Node process; the machine may be busy). */
type Call = ReadonlyArray<string> | { readonly args: ReadonlyArray<string>; readonly input: string }
const cliAll = async <const C extends ReadonlyArray<Call>>(calls: C, limit = 3): Promise<{ -readonly [K in keyof C]: Result }> => {
  const results: Array<Result> = new Array(calls.length)
  let next = 0
  const worker = async () => {
    while (next < calls.length) {
      const i = next++
      const c = calls[i]!
      results[i] = "input" in c ? await cli(c.args, { input: c.input }) : await cli(c)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, calls.length) }, worker))
  return results as { -readonly [K in keyof C]: Result }
}

const runtimes: Array<Runtime> = []
const seeded = async (prefix: string) => {
  const ks = freshKeyspace()
  const rt = runtimeFor(ks)
  runtimes.push(rt)
  const s = await rt.runPromise(seed(prefix))
  return { ks, rt, ns: ["--namespace", ks.namespace], ...s }
}
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.dispose()))
})

describe("factorial-ts: arguments and help", { timeout: 240_000 }, () => {
  it("prints help for the program and every command", async () => {
    const commands = ["run", "enqueue", "status", "history", "tail", "export", "import", "rebuild", "verify", "project", "functions", "demo"]
    const [top, ...each] = await cliAll([["--help"], ...commands.map((c) => [c, "--help"])])
    expect(top!.code).toBe(0)
    for (const c of commands) expect(top!.stdout).toContain(`  ${c} `)
    expect(top!.stdout).toContain("--cluster-nodes <host:port,...>")
    each.forEach((r, i) => {
      expect(r.code, commands[i]).toBe(0)
      expect(r.stdout).toContain(`Usage: factorial-ts ${commands[i]}`)
    })
    const none = await cli([])
    expect(none.code).toBe(2)
  })

  it("exits 2 with a message on stderr for bad arguments", async () => {
    const cases: ReadonlyArray<[ReadonlyArray<string>, string]> = [
      [["bogus"], "unknown command"],
      [["status", "--bogus", "x"], "unknown flag --bogus"],
      [["status"], "missing argument <task-id>"],
      [["status", "a", "b"], "unexpected argument"],
      [["project", "--bucket-size", "weeks"], "--bucket-size"],
      [["project", "--timeline-duration", "0"], "--timeline-duration must be at least 1"],
      [["enqueue", "--owner", "o", "--payload", "{}"], "missing --agent"],
      [["enqueue", "--agent", "a", "--owner", "o", "--payload", "{nope"], "--payload is not JSON"],
      [["enqueue", "--agent", "bad name", "--owner", "o", "--payload", "{}"], "--agent"],
      [["--partitions", "abc", "verify"], "--partitions expects an integer"],
      [["--namespace", "a b", "verify"], "--namespace"],
      [["export", "--since", "yesterday-ish"], "not a time"],
      [["export", "--expired-source", "magic"], "must be one of"],
      [["export", "--status", "done"], "unknown status done"],
      [["tail", "--type", "TaskExploded"], "unknown event type"],
      [["history", "x", "--up-to", "0"], "--up-to must be at least 1"],
      [["status", "bad id!"], "invalid task id"],
      [["--redis-url", "redis://127.0.0.1:6379", "--cluster-nodes", "127.0.0.1:7000", "status", "x"], "exclude each other"],
      [["--cluster-nodes", "127.0.0.1", "status", "x"], "--cluster-nodes: expected host:port"],
      [["--cluster-nodes", "a:1,b:70000", "verify"], "got \"b:70000\""]
    ]
    const results = await cliAll(cases.map(([args]) => args))
    results.forEach((r, i) => {
      expect(r.code, cases[i]![0].join(" ")).toBe(2)
      expect(r.stderr, cases[i]![0].join(" ")).toContain(cases[i]![1])
      expect(r.stdout).toBe("")
    })
    const ambiguous = await cli(["status", "x"], { env: { REDIS_CLUSTER_NODES: "127.0.0.1:7000" } })
    expect(ambiguous.code).toBe(2)
    expect(ambiguous.stderr).toContain("both REDIS_URL and REDIS_CLUSTER_NODES are set")
    const json = await cli(["status", "--json"])
    expect(json.code).toBe(2)
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { tag: "UsageError" } })
  })

  it("exits 3 for unknown tasks, modules and files", async () => {
    const ns = ["--namespace", freshKeyspace().namespace]
    const results = await cliAll([
      [...ns, "status", "no-such-task"],
      [...ns, "history", "no-such-task"],
      [...ns, "verify", "no-such-task"],
      [...ns, "run", "./no/such/module.ts"],
      [...ns, "import", "--file", "/no/such/file.jsonl"]
    ])
    for (const r of results) expect(r.code, r.stderr).toBe(3)
    expect(results[0]!.stderr).toContain("task no-such-task not found")
    const json = await cli([...ns, "status", "no-such-task", "--json"])
    expect(JSON.parse(json.stdout)).toEqual({ error: { tag: "TaskNotFound", message: "task no-such-task not found" } })
  })

  it("exits 1 when Redis (or every Cluster seed node) cannot be reached", async () => {
    const [r, c] = await cliAll([["--redis-url", "redis://127.0.0.1:1", "status", "x"], ["--cluster-nodes", "127.0.0.1:1", "status", "x"]])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("cannot reach Redis at redis://127.0.0.1:1")
    expect(c.code).toBe(1)
    expect(c.stderr).toContain("cannot reach Redis at cluster 127.0.0.1:1")
  })

  it("demo --help describes the demo (the demo itself is tested in test/src/Demo.test.ts)", async () => {
    const r = await cli(["demo", "--help"])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/demo/)
  })
})

describe("factorial-ts: tasks", { timeout: 240_000 }, () => {
  it("enqueue, status, history", async () => {
    const ns = ["--namespace", freshKeyspace().namespace]
    const payload = JSON.stringify({ messages: [{ role: "user", content: "hi" }] })
    const enq = await cli([...ns, "enqueue", "--agent", "chat", "--owner", "u1", "--payload", payload, "--id", "t-1", "--json"])
    expect(enq.code, enq.stderr).toBe(0)
    expect(JSON.parse(enq.stdout)).toEqual({ taskId: "t-1", agent: "chat", ownerId: "u1" })
    const again = await cli([...ns, "enqueue", "--agent", "chat", "--owner", "u1", "--payload", "1", "--id", "t-1"])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain("already exists")
    const generated = await cli([...ns, "enqueue", "--agent", "chat", "--owner", "u1", "--payload", "1"])
    expect(generated.stdout).toMatch(/^[0-9a-f-]{36}\n$/)

    const [status, statusJson, history, historyJson] = await cliAll([
      [...ns, "status", "t-1"],
      [...ns, "status", "t-1", "--json"],
      [...ns, "history", "t-1"],
      [...ns, "history", "t-1", "--json"]
    ])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/^status\s+queued$/m)
    expect(JSON.parse(statusJson.stdout)).toMatchObject({ id: "t-1", status: "queued", agent: "chat", payload: JSON.parse(payload) })
    expect(history.stdout).toMatch(/^\S+Z\s+v1\s+TaskEnqueued\s+→ queued\s+maxRetries=5 payload=/)
    expect(JSON.parse(historyJson.stdout)).toMatchObject({ version: 1, taskId: "t-1", event: { _tag: "TaskEnqueued" } })
  })

  it("history shows a timeline with key fields; --up-to stops early", async () => {
    const { ns, t } = await seeded("h")
    const r = await cli([...ns, "history", t("done")])
    expect(r.code).toBe(0)
    const lines = r.stdout.trimEnd().split("\n")
    expect(lines).toHaveLength(8)
    expect(lines[1]).toMatch(/v2\s+TaskClaimed\s+→ processing\s+lease=1 worker=w1$/)
    expect(lines[3]).toMatch(/v4\s+TaskSteered\s+→ queued\s+messages=1 /)
    expect(lines[7]).toMatch(/v8\s+TaskCompleted\s+→ completed\s+lease=3 output=\{"answer":42\}$/)
    const json = await cli([...ns, "history", t("done"), "--json", "--up-to", "3", "--page-size", "2"])
    expect(json.stdout.trimEnd().split("\n").map((l) => JSON.parse(l).version)).toEqual([1, 2, 3])
    const failed = await cli([...ns, "history", t("backoff")])
    expect(failed.stdout).toMatch(/TaskFailed\s+→ backoff\s+lease=1 decision=backoff retries=1 error=transient: "rate limited" retryAt=/)
    const expired = await cli([...ns, "status", t("expired")])
    expect(expired).toMatchObject({ code: 0 })
    expect(expired.stdout).toContain("expired")
  })
})

describe("factorial-ts: verify, rebuild, export, import", { timeout: 240_000 }, () => {
  it("verify finds a corrupted status hash (exit 1); rebuild --fix repairs it", async () => {
    const { ns, ks, rt, t, ids } = await seeded("c")
    expect((await cli([...ns, "verify"])).code).toBe(0)
    await rt.runPromise(redisDo((c) => c.hset(taskKeys(ks, t("done")).task, "status", "failed")))
    const [all, one, oneJson, dry] = await cliAll([
      [...ns, "verify"],
      [...ns, "verify", t("done")],
      [...ns, "verify", t("done"), "--json"],
      [...ns, "rebuild"]
    ])
    expect(all.code).toBe(1)
    expect(all.stdout).toContain(`${t("done")}: failed in the hash, completed by its history`)
    expect(all.stdout).toContain("status: live \"failed\", expected \"completed\"")
    expect(all.stdout).toContain("1 divergent")
    expect(one.code).toBe(1)
    expect(JSON.parse(oneJson.stdout)).toMatchObject({
      ok: false,
      divergences: [{ field: "status", live: "failed", expected: "completed" }]
    })
    expect(dry.code).toBe(1)
    const fix = await cli([...ns, "rebuild", "--fix", "--json"])
    expect(fix.code).toBe(0)
    expect(JSON.parse(fix.stdout)).toMatchObject({ checked: ids.length, divergent: 1, fixed: 1 })
    const after = await cli([...ns, "verify", "--json"])
    expect(after.code).toBe(0)
    // verify goes by the status indexes, which the expired task has left.
    expect(JSON.parse(after.stdout)).toMatchObject({ checked: ids.length - 1, divergent: 0 })
  })

  it("export > file, import < file into a fresh namespace: same histories, clean verify; non-empty refused", async () => {
    const { ns, ids } = await seeded("e")
    const exported = await cli([...ns, "export"])
    expect(exported.code, exported.stderr).toBe(0)
    const lines = exported.stdout.trimEnd().split("\n")
    expect(lines).toHaveLength(ids.length)
    expect(exported.stderr).toMatch(new RegExp(`exported ${ids.length} tasks, \\d+ events \\(peak RSS [\\d.]+ MB\\)`))

    const target = ["--namespace", freshKeyspace().namespace]
    const imported = await cli([...target, "import", "--json"], { input: exported.stdout })
    expect(imported.code, imported.stderr).toBe(0)
    expect(JSON.parse(imported.stdout)).toMatchObject({ tasks: ids.length })
    const some = [ids[1]!, ids[6]!] as const // a multi-turn task and an expired one
    const [a1, a2, b1, b2, verify, refused] = await cliAll([
      [...ns, "history", some[0], "--json"],
      [...ns, "history", some[1], "--json"],
      [...target, "history", some[0], "--json"],
      [...target, "history", some[1], "--json"],
      [...target, "verify"],
      { args: [...target, "import"], input: exported.stdout }
    ])
    expect([b1.stdout, b2.stdout]).toEqual([a1.stdout, a2.stdout])
    expect(b1.stdout.split("\n").length).toBeGreaterThan(5)
    expect(verify.code).toBe(0)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain("is not empty")

    const dir = mkdtempSync(join(tmpdir(), "fx-cli-"))
    writeFileSync(join(dir, "bad.jsonl"), lines[0] + "\n{\"taskId\":\"x\"}\n")
    const bad = await cli(["--namespace", freshKeyspace().namespace, "import", "--file", join(dir, "bad.jsonl")])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("line 2: not a task history")

    const windowed = await cli([...ns, "export", "--since", "now"])
    expect(windowed).toMatchObject({ code: 0, stdout: "" })
    const [agent, expired] = await cliAll([[...ns, "export", "--agent", "tools"], [...ns, "export", "--status", "expired"]])
    expect(agent.stdout.trimEnd().split("\n")).toHaveLength(2)
    expect(JSON.parse(expired.stdout).taskId).toBe(ids[6])
  })
})

describe("factorial-ts: functions", { timeout: 240_000 }, () => {
  it("lists the function libraries of other releases; --prune deletes them and keeps this release's", async () => {
    // An older release's library, as FUNCTION LOAD leaves it (its own name and function names).
    const old = `factorial_${"0".repeat(12)}`
    const conn = new Redis(redisUrl)
    const libraries = async () =>
      ((await conn.call("FUNCTION", "LIST", "LIBRARYNAME", "factorial_*")) as Array<Array<unknown>>).map((l) => String(l[1]))
    try {
      await conn.call("FUNCTION", "LOAD", "REPLACE", `#!lua name=${old}\nredis.register_function('fx_000000000000_noop', function() return 1 end)`)
      const listed = await cli(["functions", "--json"])
      expect(listed.code, listed.stderr).toBe(0)
      const report = JSON.parse(listed.stdout) as { current: string; others: Array<string>; deleted: Array<string> }
      expect(report.current).toBe(`factorial_${libraryVersion}`)
      expect(report.others).toContain(old)
      expect(report.deleted).toEqual([])
      expect(await libraries()).toContain(old)

      const pruned = await cli(["functions", "--prune"])
      expect(pruned.code, pruned.stderr).toBe(0)
      expect(pruned.stdout).toContain(`deleted: `)
      expect(pruned.stdout).toContain(old)
      const left = await libraries()
      expect(left).not.toContain(old)
      expect(left).toContain(`factorial_${libraryVersion}`)
      expect(left.filter((name) => name !== `factorial_${libraryVersion}`)).toEqual([])
    } finally {
      await conn.quit()
    }
  })
})

describe("factorial-ts: tail and run", { timeout: 240_000 }, () => {
  /** `tail` as a process: ready once it says it is tailing, exited with its code, and what it printed. */
  const tail = (ns: ReadonlyArray<string>, args: ReadonlyArray<string>) => {
    const child = spawn("node", ["src/cli/main.ts", ...ns, "tail", ...args], { cwd: root, env })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    const ready = new Promise<void>((r) => child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
      if (stderr.includes("tailing")) r()
    }))
    const exited = new Promise<number | null>((r) => child.on("close", r))
    return { ready, exited, stdout: () => stdout }
  }

  it("tail follows new events with filters, as text or JSON", async () => {
    const ns = ["--namespace", freshKeyspace().namespace]
    const child = tail(ns, ["--json", "--limit", "2", "--owner", "alice"])
    await child.ready
    await cli([...ns, "enqueue", "--agent", "a", "--owner", "bob", "--payload", "1", "--id", "b1"])
    await cli([...ns, "enqueue", "--agent", "a", "--owner", "alice", "--payload", "2", "--id", "a1"])
    await cli([...ns, "enqueue", "--agent", "a", "--owner", "alice", "--payload", "3", "--id", "a2"])
    expect(await child.exited).toBe(0)
    expect(child.stdout().trimEnd().split("\n").map((l) => JSON.parse(l).taskId)).toEqual(["a1", "a2"])
  })

  it("tail prints what running turns emit, unless --no-emits", async () => {
    const ks = freshKeyspace()
    const ns = ["--namespace", ks.namespace]
    // TaskEnqueued, TaskClaimed, TaskCompleted and two emits: five lines.
    const text = tail(ns, ["--limit", "5"])
    const json = tail(ns, ["--json", "--no-emits", "--agent", "talker", "--limit", "3"])
    const talker = defineAgent({
      name: "talker",
      turn: async (ctx) => {
        ctx.emit("step", { i: 1 })
        ctx.emit("step", { i: 2 })
        return Done(null)
      }
    })
    const o = new Orchestrator({ redisUrl, ...ks })
    o.registerRunner({ agent: talker })
    try {
      await Promise.all([text.ready, json.ready])
      await o.start()
      await o.enqueueTask(talker, talker.createTask({ ownerId: "o", payload: {}, id: "t1" }))
      expect(await text.exited).toBe(0)
      expect(await json.exited).toBe(0)
    } finally {
      await o.stop()
    }
    const lines = text.stdout().trimEnd().split("\n")
    expect(lines.filter((l) => l.includes("t1  talker  o  emit step")).map((l) => l.replace(/.* emit /, ""))).toEqual(
      ["step {\"i\":1}", "step {\"i\":2}"]
    )
    expect(lines.filter((l) => / v\d+ Task/.test(l)).length).toBe(3)
    const envelopes = json.stdout().trimEnd().split("\n").map((l) => JSON.parse(l))
    expect(envelopes.map((e) => e.event._tag)).toEqual(["TaskEnqueued", "TaskClaimed", "TaskCompleted"])
  })

  it("project keeps the metrics of workers that do not project, until SIGTERM, then exits 0", async () => {
    const ks = freshKeyspace()
    const ns = ["--namespace", ks.namespace]
    const echo = defineAgent<{ n: number }>({ name: "echo", turn: (ctx) => Promise.resolve(Done(ctx.payload.n)) })
    const worker = new Orchestrator({ redisUrl, ...ks, projectMetrics: false })
    worker.registerRunner({ agent: echo })
    const app = worker.createObservabilityApp()
    const overview = async () => (await app.inject({ method: "GET", url: "/observability/api/overview?window=1h" })).json()
    const child = spawn("node", ["src/cli/main.ts", ...ns, "project"], { cwd: root, env })
    let stderr = ""
    const ready = new Promise<void>((r) => child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
      if (stderr.includes("projecting")) r()
    }))
    const exited = new Promise<number | null>((r) => child.on("close", r))
    try {
      await worker.start()
      await Promise.all([1, 2].map((n) => worker.enqueueTask(echo, echo.createTask({ ownerId: "o", payload: { n } }))))
      await ready
      expect(stderr).toContain(`projecting the metrics of ${ks.namespace} (1 partition, buckets of one minute)`)
      let o = await overview()
      for (let i = 0; i < 200 && !(o.totals.counters.completed === 2 && o.metricsProjection.oldestUnprojectedAgeMs === null); i++) {
        await new Promise((r) => setTimeout(r, 50))
        o = await overview()
      }
      expect(o.totals.counters).toMatchObject({ enqueued: 2, completed: 2 })
      expect(o.metricsProjection).toEqual({ liveProjectors: 1, oldestUnprojectedAgeMs: null, stalled: false })
      child.kill("SIGTERM")
      expect(await exited).toBe(0)
      expect((await overview()).metricsProjection.liveProjectors, "a clean stop leaves the count").toBe(0)
    } finally {
      child.kill("SIGKILL")
      await app.close()
      await worker.stop()
    }
  })

  it("run <config-module> works tasks until SIGTERM, then exits 0", async () => {
    const ks = freshKeyspace()
    const ns = ["--namespace", ks.namespace]
    const child = spawn("node", ["src/cli/main.ts", ...ns, "run", "test/cli/fixtures/echo-orchestrator.ts"], { cwd: root, env })
    let stderr = ""
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<number | null>((r) => child.on("close", r))
    try {
      const enq = await cli([...ns, "enqueue", "--agent", "echo", "--owner", "o", "--payload", "{\"n\":3}", "--id", "e1"])
      expect(enq.code).toBe(0)
      let status = ""
      for (let i = 0; i < 100 && status !== "completed"; i++) {
        const r = await cli([...ns, "status", "e1", "--json"])
        status = r.code === 0 ? JSON.parse(r.stdout).status : ""
        if (status !== "completed") await new Promise((r) => setTimeout(r, 200))
      }
      expect(status).toBe("completed")
      expect(stderr).toContain(`running echo in namespace ${ks.namespace}`)
      const history = await cli([...ns, "history", "e1"])
      expect(history.stdout).toContain("TaskCompleted")
      expect(history.stdout).toContain('output={"turns":3}')
    } finally {
      child.kill("SIGTERM")
    }
    expect(await exited).toBe(0)
    expect(stderr).toContain("stopped")
  })
})
