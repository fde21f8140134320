/**
 * The dashboard's JSON API, `/metrics` and the page itself through `inject()`: every route with good and
 * bad input (400 with a clear message), 404 for an unknown task, 401 without the token, CORS, and paging
 * through the status index across partitions — including a run of tasks that entered the status in the same
 * millisecond, which must page without a skip or a repeat.
 *
 * No worker runs here: tasks stay queued, the metrics projector is caught up by hand, and the agent "echo"
 * has waiting tasks and no live worker (the warning case).
 */
import { Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { MetricsProjector } from "../../../projections/Projector.ts"
import { taskKeys } from "../../../streams/Keys.ts"
import { defineAgent, Done } from "../../../src/Agent.ts"
import { MetricsTimelineConfig, ObservabilityConfig } from "../../../src/Config.ts"
import { Orchestrator } from "../../../src/Orchestrator.ts"
import { exec, runtimeFor } from "../../audit/fixtures.ts"
import { freshKeyspace, rawClient, testPartitions, testRedisOptions } from "../../support/TestRedis.ts"

const token = "a-test-token-of-some-length"
const auth = { authorization: `Bearer ${token}` }
const echo = defineAgent({
  name: "echo",
  payload: Schema.Struct({ text: Schema.String }),
  turn: (ctx) => Promise.resolve(Done(ctx.payload.text))
})
const other = defineAgent({ name: "other", turn: () => Promise.resolve(Done(null)) })
// At least 3 partitions, so pages merge several indexes even on the standalone project.
const keyspace = freshKeyspace(Math.max(3, testPartitions))
const orchestrator = new Orchestrator({ ...testRedisOptions, ...keyspace })
orchestrator.registerRunner({ agent: echo })
const app = orchestrator.createObservabilityApp(
  new ObservabilityConfig({ authToken: token, dashboardName: "Ops <Board> & \"co\"", corsOrigins: ["https://ops.example"] })
)
const redis = rawClient()

const get = (url: string, headers: Record<string, string> = auth) => app.inject({ method: "GET", url, headers })
const ids: Array<string> = []

beforeAll(async () => {
  await app.ready()
  for (let i = 0; i < 9; i++) {
    ids.push(await orchestrator.enqueueTask(echo, echo.createTask({ ownerId: i % 3 === 0 ? "alice" : "bob", payload: { text: `t${i}` } })))
    await new Promise((r) => setTimeout(r, 2))
  }
  ids.push(await orchestrator.enqueueTask(other, other.createTask({ ownerId: "alice", payload: {} })))
  await orchestrator.runEffect(MetricsProjector.use((p) => p.catchUp()))
})
afterAll(async () => {
  redis.disconnect()
  await app.close()
  await orchestrator.stop()
})

/** Follows `nextCursor` to the end; returns every page. */
const allPages = async (query: string) => {
  const pages: Array<{ tasks: Array<{ id: string; ownerId: string; agent: string; enteredAt: number }>; nextCursor: string | null; scanned: number }> = []
  let cursor: string | null = ""
  while (cursor !== null) {
    const res = await get(`/observability/api/tasks?${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)
    expect(res.statusCode).toBe(200)
    const page = res.json()
    pages.push(page)
    cursor = page.nextCursor
    if (pages.length > 50) throw new Error("paging does not end")
  }
  return pages
}

describe("overview, timeline, agents, queues, workers", () => {
  it("overview: gauges, warnings and the window's totals", async () => {
    const res = await get("/observability/api/overview?window=15m")
    expect(res.statusCode).toBe(200)
    const o = res.json()
    expect(o.window).toBe("15m")
    expect(o.tasksByStatus).toMatchObject({ queued: 10, processing: 0, completed: 0 })
    const q = o.queues.find((x: { agent: string }) => x.agent === "echo")
    expect(q).toMatchObject({ agent: "echo", waiting: 9, inFlight: 0, liveWorkers: 0, noLiveWorkers: true })
    expect(q.oldestWaitingAgeMs).toBeGreaterThanOrEqual(0)
    expect(o.warnings.map((w: { agent: string }) => w.agent).sort()).toEqual(["echo", "other"])
    expect(o.totals.counters.enqueued).toBe(10)
    expect(o.totals.successRate).toBeNull()
    expect((await get("/observability/api/overview")).json().window).toBe("1h")
  })

  it("timeline: one point per bucket, merged for long windows; per agent", async () => {
    const short = (await get("/observability/api/timeline?window=15m")).json()
    expect(short.bucketSeconds).toBe(60)
    expect(short.points).toHaveLength(15)
    expect(short.points.reduce((n: number, p: { counters: { enqueued: number } }) => n + p.counters.enqueued, 0)).toBe(10)
    const long = (await get("/observability/api/timeline?window=24h")).json()
    expect(long.points.length).toBeLessThanOrEqual(120)
    expect(long.pointSeconds).toBe(720)
    expect(long.points.reduce((n: number, p: { counters: { enqueued: number } }) => n + p.counters.enqueued, 0)).toBe(10)
    const one = (await get("/observability/api/timeline?window=1h&agent=other")).json()
    expect(one.agent).toBe("other")
    expect(one.points.reduce((n: number, p: { counters: { enqueued: number } }) => n + p.counters.enqueued, 0)).toBe(1)
  })

  it("agents: one row per agent with gauges and totals", async () => {
    const { agents } = (await get("/observability/api/agents?window=1h")).json()
    expect(agents.map((a: { agent: string }) => a.agent)).toEqual(["echo", "other"])
    expect(agents[0]).toMatchObject({ agent: "echo", waiting: 9, registeredHere: true, noLiveWorkers: true })
    expect(agents[0].totals.counters.enqueued).toBe(9)
    expect(agents[1]).toMatchObject({ agent: "other", waiting: 1, registeredHere: false })
  })

  it("queues and workers", async () => {
    const queues = (await get("/observability/api/queues")).json()
    expect(queues.queues.map((q: { agent: string; waiting: number }) => [q.agent, q.waiting])).toEqual([["echo", 9], ["other", 1]])
    const workers = (await get("/observability/api/workers")).json()
    expect(workers).toMatchObject({ liveWithinMs: 30_000, workers: [] })
  })

  it("rejects bad windows and agents with 400", async () => {
    for (const url of [
      "/observability/api/overview?window=2h",
      "/observability/api/timeline?window=1d",
      "/observability/api/agents?window=",
      "/observability/api/timeline?agent={bad}"
    ]) {
      const res = await get(url)
      expect(res.statusCode, url).toBe(400)
      expect(res.json().error.tag).toBe("InvalidInput")
    }
    expect((await get("/observability/api/overview?window=2h")).json().error.message).toContain("\"15m\" | \"1h\" | \"6h\" | \"24h\"")
  })

  it("refuses a window that needs more stored buckets than one query reads (400)", async () => {
    const fine = new Orchestrator({
      ...testRedisOptions,
      ...keyspace,
      metricsConfig: new MetricsTimelineConfig({ bucketSize: "seconds", timelineDuration: 600 })
    })
    const fineApp = fine.createObservabilityApp(new ObservabilityConfig())
    try {
      const short = await fineApp.inject({ url: "/observability/api/timeline?window=15m" })
      expect(short.statusCode).toBe(200)
      expect(short.json()).toMatchObject({ bucketSeconds: 1, pointSeconds: 8 })
      const long = await fineApp.inject({ url: "/observability/api/timeline?window=24h" })
      expect(long.statusCode).toBe(400)
      expect(long.json().error.tag).toBe("TimelineRangeInvalid")
      expect(long.json().error.message).toContain("more than 10000 buckets of 1 s")
    } finally {
      await fineApp.close()
      await fine.stop()
    }
  })

  it("a server reads a window once per 1/1440 of it, shares that read meanwhile, then reads it again", async () => {
    const ks = freshKeyspace()
    const own = new Orchestrator({ ...testRedisOptions, ...ks })
    const ownApp = own.createObservabilityApp(new ObservabilityConfig())
    const enqueued = async () => {
      const res = await ownApp.inject({ url: "/observability/api/timeline?window=15m&agent=other" })
      expect(res.statusCode).toBe(200)
      const body = res.json() as { to: number; points: Array<{ counters: { enqueued: number } }> }
      return { to: body.to, enqueued: body.points.reduce((n, p) => n + p.counters.enqueued, 0) }
    }
    const project = () => own.runEffect(MetricsProjector.use((p) => p.catchUp()))
    try {
      await own.enqueueTask(other, other.createTask({ ownerId: "u", payload: {} }))
      await project()
      const first = await enqueued()
      expect(first.enqueued).toBe(1)
      // Within 15 min / 1440 = 625 ms: the same read (its range ends where the first one's did), however the
      // buckets moved meanwhile; other windows and agents are read on their own.
      await own.enqueueTask(other, other.createTask({ ownerId: "u", payload: {} }))
      await project()
      await new Promise((r) => setTimeout(r, 20))
      expect(await enqueued()).toEqual(first)
      const overview = (await ownApp.inject({ url: "/observability/api/overview?window=15m" })).json()
      expect(overview.totals.counters.enqueued).toBe(2)
      // After that, a new read.
      await new Promise((r) => setTimeout(r, 650))
      const later = await enqueued()
      expect(later.to).toBeGreaterThan(first.to)
      expect(later.enqueued).toBe(2)
    } finally {
      await ownApp.close()
      await own.stop()
    }
  })
})

describe("tasks by status", () => {
  it("pages newest first across partitions, without skips or repeats", async () => {
    const pages = await allPages("status=queued&limit=3")
    const seen = pages.flatMap((p) => p.tasks.map((t) => t.id))
    expect(seen).toHaveLength(10)
    expect(new Set(seen)).toEqual(new Set(ids))
    const times = pages.flatMap((p) => p.tasks.map((t) => t.enteredAt))
    expect(times).toEqual([...times].sort((a, b) => b - a))
    expect(pages.at(-1)!.nextCursor).toBeNull()
    expect(pages.slice(0, -1).every((p) => p.tasks.length === 3)).toBe(true)
  })

  it("pages exactly through tasks that entered the status in the same millisecond", async () => {
    // Put every queued task at one score: only the id orders them now.
    const at = Date.now()
    for (const id of ids) {
      const k = taskKeys(keyspace, id)
      expect(await redis.zadd(k.index("queued"), "XX", "CH", at, id)).toBe(1)
    }
    for (const limit of [1, 2, 4]) {
      const pages = await allPages(`status=queued&limit=${limit}`)
      const seen = pages.flatMap((p) => p.tasks.map((t) => t.id))
      expect(seen, `limit ${limit}`).toEqual([...ids].sort().reverse())
    }
  })

  it("filters by agent and owner on each page", async () => {
    const byOwner = (await allPages("status=queued&limit=4&owner=alice")).flatMap((p) => p.tasks)
    expect(byOwner.map((t) => t.id).sort()).toEqual([ids[0], ids[3], ids[6], ids[9]].sort())
    const byAgent = (await allPages("status=queued&limit=4&agent=other")).flatMap((p) => p.tasks)
    expect(byAgent.map((t) => t.id)).toEqual([ids[9]])
    const page = (await get("/observability/api/tasks?status=queued&limit=2&agent=nobody")).json()
    expect(page).toMatchObject({ tasks: [], scanned: 2, filter: { agent: "nobody", owner: null } })
    expect(page.nextCursor).not.toBeNull()
    expect((await get("/observability/api/tasks?status=completed")).json()).toMatchObject({ tasks: [], nextCursor: null })
  })

  it("rejects a bad status, limit or cursor with 400 and says why", async () => {
    const cases: Array<[string, string]> = [
      ["/observability/api/tasks", "status is required"],
      ["/observability/api/tasks?status=nope", "unknown status \"nope\""],
      ["/observability/api/tasks?status=expired", "unknown status \"expired\""],
      ["/observability/api/tasks?status=queued&limit=0", "between 1 and 200"],
      ["/observability/api/tasks?status=queued&limit=201", "between 1 and 200"],
      ["/observability/api/tasks?status=queued&limit=ten", "limit"],
      ["/observability/api/tasks?status=queued&cursor=abc", "invalid cursor"],
      ["/observability/api/tasks?status=queued&cursor=12:{x}", "invalid cursor"],
      ["/observability/api/tasks?status=queued&agent=a%20b", "agent"]
    ]
    for (const [url, message] of cases) {
      const res = await get(url)
      expect(res.statusCode, url).toBe(400)
      expect(res.json().error.tag, url).toBe("InvalidInput")
      expect(res.json().error.message, url).toContain(message)
    }
  })
})

describe("one task", () => {
  it("answers its data and full history", async () => {
    const res = await get(`/observability/api/tasks/${ids[0]}`)
    expect(res.statusCode).toBe(200)
    const d = res.json()
    expect(d.task).toMatchObject({ id: ids[0], agent: "echo", ownerId: "alice", status: "queued", payload: { text: "t0" } })
    expect(d).toMatchObject({ status: "queued", historyLength: 1, historyStart: 0 })
    expect(d.history.map((e: { event: { _tag: string } }) => e.event._tag)).toEqual(["TaskEnqueued"])
  })

  it("an expired task answers the payload its last checkpoint left, folded from its history (deltas applied)", async () => {
    // A namespace of its own: the other tests count this one's tasks.
    const ks = freshKeyspace()
    const own = new Orchestrator({ ...testRedisOptions, ...ks })
    const ownApp = own.createObservabilityApp(new ObservabilityConfig({ authToken: token }))
    const id = "expired-chain"
    let now = Date.now() - 1_000
    const store = runtimeFor(ks)
    try {
      await store.runPromise(exec([
        { _tag: "Enqueue", taskId: id, agent: "echo", ownerId: "alice", payload: { state: { messages: ["q"] }, notes: "a" }, maxRetries: 1, now: ++now },
        { _tag: "Claim", taskId: id, lease: 0, worker: "w", now: ++now },
        {
          _tag: "CompleteTurn",
          taskId: id,
          lease: 1,
          payloadDelta: { append: { notes: "b" }, patch: { state: { append: { messages: ["r"] } } } },
          steeringApplied: 0,
          now: ++now
        },
        { _tag: "Claim", taskId: id, lease: 1, worker: "w", now: ++now },
        {
          _tag: "Complete",
          taskId: id,
          lease: 2,
          output: "done",
          payloadDelta: { patch: { state: { append: { messages: ["s"] }, set: { step: 2 } } } },
          steeringApplied: 0,
          now: ++now
        },
        { _tag: "Expire", taskId: id, now: ++now }
      ]))
    } finally {
      await store.dispose()
    }
    try {
      const d = (await ownApp.inject({ method: "GET", url: `/observability/api/tasks/${id}`, headers: auth })).json()
      expect(d).toMatchObject({ task: null, status: "expired", historyLength: 6 })
      expect(d.lastPayload).toEqual({ state: { messages: ["q", "r", "s"], step: 2 }, notes: "ab" })
    } finally {
      await ownApp.close()
      await own.stop()
    }
    // A task whose data is there answers its payload in `task`, and no `lastPayload`.
    expect((await get(`/observability/api/tasks/${ids[0]}`)).json().lastPayload).toBeUndefined()
  })

  it("404 for an unknown task, 400 for a malformed id", async () => {
    const missing = await get("/observability/api/tasks/no-such-task")
    expect(missing.statusCode).toBe(404)
    expect(missing.json()).toEqual({ error: { tag: "TaskNotFound", message: "task no-such-task not found" } })
    const bad = await get("/observability/api/tasks/%7Bbad%7D")
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error.message).toContain("invalid task id")
  })
})

describe("/metrics", () => {
  it("exposes gauges and per-agent counters in the Prometheus text format", async () => {
    const res = await get("/metrics")
    expect(res.statusCode).toBe(200)
    expect(res.headers["content-type"]).toContain("text/plain; version=0.0.4")
    const text = res.body
    expect(text).toContain("# TYPE factorial_tasks gauge")
    expect(text).toContain("factorial_tasks{status=\"queued\"} 10")
    expect(text).toContain("factorial_queue_waiting_tasks{agent=\"echo\"} 9")
    expect(text).toContain("factorial_live_workers{agent=\"echo\"} 0")
    expect(text).toContain("# TYPE factorial_tasks_enqueued_total counter")
    expect(text).toContain("factorial_tasks_enqueued_total{agent=\"echo\"} 9")
    expect(text).toContain("factorial_tasks_enqueued_total{agent=\"other\"} 1")
    expect(text).toContain("# TYPE factorial_task_wait_seconds summary")
    expect(text).toContain("factorial_task_wait_seconds_count{agent=\"echo\"} 0")
    // Every sample line is `name{labels} value`.
    for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
      expect(line).toMatch(/^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+-]+|NaN|\+Inf)$/)
    }
    // Counters never go down from one scrape to the next.
    const again = (await get("/metrics")).body
    expect(again).toContain("factorial_tasks_enqueued_total{agent=\"echo\"} 9")
  })
})

describe("auth, CORS and the page", () => {
  it("401 on every API route and /metrics without the token; the page itself is public", async () => {
    for (const url of [
      "/observability/api/overview",
      "/observability/api/timeline",
      "/observability/api/agents",
      "/observability/api/queues",
      "/observability/api/workers",
      "/observability/api/tasks?status=queued",
      `/observability/api/tasks/${ids[0]}`,
      "/observability/api/events",
      "/metrics"
    ]) {
      const res = await get(url, {})
      expect(res.statusCode, url).toBe(401)
      expect(res.json().error.tag).toBe("Unauthorized")
      expect((await get(url, { authorization: "Bearer not-the-token-at-all" })).statusCode, url).toBe(401)
    }
    expect((await get(`/observability/api/overview?token=${token}`, {})).statusCode).toBe(200)
    expect((await get("/observability", {})).statusCode).toBe(200)
  })

  it("serves the page (escaped title, CSP), its script and stylesheet", async () => {
    const page = await get("/observability", {})
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8")
    expect(page.headers["content-security-policy"]).toContain("script-src 'self'")
    expect(page.body).toContain("<title>Ops &lt;Board&gt; &amp; &quot;co&quot;</title>")
    expect(page.body).not.toMatch(/https?:\/\//)
    const js = await get("/observability/assets/dashboard.js", {})
    expect(js.statusCode).toBe(200)
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8")
    expect(js.body).toContain("EventSource")
    const css = await get("/observability/assets/dashboard.css", {})
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8")
    expect((await get("/observability/assets/other.js", {})).statusCode).toBe(404)
  })

  it("allows the configured CORS origins only", async () => {
    const allowed = await get("/observability/api/queues", { ...auth, origin: "https://ops.example" })
    expect(allowed.headers["access-control-allow-origin"]).toBe("https://ops.example")
    const denied = await get("/observability/api/queues", { ...auth, origin: "https://evil.example" })
    expect(denied.headers["access-control-allow-origin"]).toBeUndefined()
    const preflight = await app.inject({
      method: "OPTIONS",
      url: "/api/tasks/x/cancel",
      headers: { origin: "https://ops.example", "access-control-request-method": "POST" }
    })
    expect(preflight.statusCode).toBe(204)
    expect(preflight.headers["access-control-allow-headers"]).toContain("authorization")
    const refused = await app.inject({ method: "OPTIONS", url: "/api/tasks/x/cancel", headers: { origin: "https://evil.example" } })
    expect(refused.statusCode).toBe(404)
  })
})


describe("gauges read once per interval", () => {
  it("requests within the interval share one read; a server reading every time sees a new task at once", async () => {
    const shared = orchestrator.createObservabilityApp(new ObservabilityConfig({ gaugesReadEveryMs: 60_000 }))
    const fresh = orchestrator.createObservabilityApp(new ObservabilityConfig({ gaugesReadEveryMs: 0 }))
    const waiting = async (a: typeof app) =>
      (await a.inject({ url: "/observability/api/queues" })).json().queues.find((q: { agent: string }) => q.agent === "other").waiting
    try {
      expect([await waiting(shared), await waiting(fresh)]).toEqual([1, 1])
      const id = await orchestrator.enqueueTask(other, other.createTask({ ownerId: "alice", payload: {} }))
      expect([await waiting(shared), await waiting(fresh)]).toEqual([1, 2])
      await orchestrator.cancelTask(id)
    } finally {
      await Promise.all([shared.close(), fresh.close()])
    }
  })
})
