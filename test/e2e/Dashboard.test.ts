/**
 * The dashboard end to end, in headless Chromium (playwright-core driving the system's chromium): an
 * orchestrator runs a plain agent (a few short turns per task) with its HTTP server on port 0 and a token.
 * The page asks for the token on the API's 401, then — without a reload — shows the counts changing, a
 * task's history growing to its completion, what its turns emit (live progress and a streamed reply), the
 * conversation from its payload, the "no live workers"
 * warning for an agent nobody works on, and steers and cancels a running task from its detail view (no page
 * error, no console error but the expected 401s). It ends with a
 * screenshot in test-output/dashboard.png. A second page, of a namespace whose only process runs with
 * `projectMetrics: false`, warns that the metrics are stalled and that nobody projects them.
 *
 * Skipped when no chromium is found (CHROMIUM_PATH, default /usr/bin/chromium).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { type BrowserContext, chromium, type Page } from "playwright-core"
import { afterAll, expect, it } from "vitest"
import { Continue, defineAgent, Done } from "../../src/Agent.ts"
import { FatalAgentError } from "../../src/AgentErrors.ts"
import { AgentWorkerConfig, ObservabilityConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { partitionKeys } from "../../streams/Keys.ts"
import { exec, runtimeFor } from "../audit/fixtures.ts"
import { freshKeyspace, rawClient, testRedisOptions } from "../support/TestRedis.ts"

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const browserArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]
const outputDir = resolve(import.meta.dirname, "../../test-output")
const token = "e2e-dashboard-token-0123"

interface Draft {
  readonly turns: number
  readonly n?: number
  readonly hold?: boolean
  readonly fail?: boolean
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms)
    signal?.addEventListener("abort", () => {
      clearTimeout(t)
      reject(new Error("aborted"))
    })
  })

/**
 * A plain agent: each turn "writes a draft" (250 ms, streamed as `completion_delta` emits, then a `draft` emit)
 * until `turns` drafts exist; `hold` waits to be cancelled.
 */
const writer = defineAgent<Draft>({
  name: "writer",
  turn: async (ctx) => {
    if (ctx.payload.hold) await sleep(120_000, ctx.signal)
    await sleep(250, ctx.signal)
    if (ctx.payload.fail) throw new FatalAgentError({ message: "the model refused the request" })
    const n = (ctx.payload.n ?? 0) + 1
    for (const text of [`Draft ${n}: `, "queues hum, ", "workers wake…"]) ctx.emit("completion_delta", { text })
    ctx.emit("draft", { n, of: ctx.payload.turns })
    const content = `Draft ${n}: queues hum, workers wake… ${"and the log keeps every line. ".repeat(10)}`
    const messages = [...ctx.payload.messages, { role: "assistant", content }]
    const next = { ...ctx.payload, n, messages }
    return n >= ctx.payload.turns ? Done({ drafts: n }, next) : Continue(next)
  }
})
/** Registered nowhere: its tasks wait with no live worker. */
const reviewer = defineAgent({ name: "reviewer", turn: () => Promise.resolve(Done(null)) })

const keyspace = freshKeyspace()
const orchestrator = new Orchestrator({
  ...testRedisOptions,
  ...keyspace,
  observabilityConfig: new ObservabilityConfig({ port: 0, authToken: token, dashboardName: "Factorial — e2e" })
})
orchestrator.registerRunner({
  agent: writer,
  // Checkpoints as deltas (ADR 0018): later turns of a conversation are stored as the draft they appended.
  agentWorkerConfig: new AgentWorkerConfig({ workers: 3, heartbeatInterval: 1, checkpointDeltas: true })
})

let context: BrowserContext | undefined
const profile = mkdtempSync(join(tmpdir(), "factorial-chromium-"))
afterAll(async () => {
  await context?.close()
  await orchestrator.stop()
  rmSync(profile, { recursive: true, force: true })
})

const enqueue = (payload: Omit<Draft, "messages">, ownerId = "ada") =>
  orchestrator.enqueueTask(
    writer,
    writer.createTask({ ownerId, payload: { ...payload, messages: [{ role: "user", content: "Write a haiku about queues." }] } })
  )

// The page's globals, for the functions evaluated in it (this file is compiled without the DOM library).
// Functions, not strings: the page's Content-Security-Policy forbids evaluating strings.
declare const document: {
  querySelector(selector: string): { readonly textContent: string | null } | null
  querySelectorAll(selector: string): { readonly length: number }
}
const within = (timeout?: number) => (timeout === undefined ? {} : { timeout })
/** Waits until the element's text is `expected`. */
const untilText = (page: Page, selector: string, expected: string, timeout?: number) =>
  page.waitForFunction(([s, e]) => document.querySelector(s)?.textContent === e, [selector, expected] as const, within(timeout))
/** Waits until the element's text is a number of at least `min`. */
const untilAtLeast = (page: Page, selector: string, min: number, timeout?: number) =>
  page.waitForFunction(([s, m]) => Number(document.querySelector(s)?.textContent) >= m, [selector, min] as const, within(timeout))
/** Waits until at least `min` elements match. */
const untilCount = (page: Page, selector: string, min: number, timeout?: number) =>
  page.waitForFunction(([s, m]) => document.querySelectorAll(s).length >= m, [selector, min] as const, within(timeout))

const number = async (page: Page, selector: string) => Number((await page.textContent(selector))?.replace(/[^0-9]/g, ""))

it.skipIf(!existsSync(chromiumPath))("shows live counts and history, and steers and cancels a running task", { timeout: 60_000 }, async () => {
  await orchestrator.start()
  const url = orchestrator.observabilityUrl!
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: browserArgs
  })
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(15_000)
  const pageErrors: Array<string> = []
  page.on("pageerror", (e) => pageErrors.push(e.message))
  // Console errors other than the expected 401s (a CSP violation would show up here).
  const consoleErrors: Array<string> = []
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("401")) consoleErrors.push(m.text())
  })

  await page.goto(`${url}/observability`)
  expect(await page.title()).toBe("Factorial — e2e")
  // The API answers 401: the page asks for the token.
  await page.waitForSelector("#token-dialog[open]")
  await page.fill("#token-input", token)
  await page.click("#token-form button[type=submit]")
  await page.waitForSelector("#count-completed .card-value")
  expect(await number(page, "#count-completed .card-value")).toBe(0)
  await page.waitForSelector("#live-status[data-state=live]")
  await page.evaluate("window.marker = 'no reload'")

  // Work arrives while the page is open.
  const long = await enqueue({ turns: 6 })
  await page.evaluate(`location.hash = "task=${long}"`)
  await page.waitForSelector("#history li[data-tag=TaskEnqueued]")
  const held = await enqueue({ turns: 1, hold: true }, "grace")
  for (const turns of [1, 2, 3, 2, 4]) await enqueue({ turns })
  await enqueue({ turns: 1, fail: true }, "grace")
  for (let i = 0; i < 2; i++) await orchestrator.enqueueTask(reviewer, reviewer.createTask({ ownerId: "lin", payload: {} }))

  // The open task's history grows, live, to its completion; its turns' emits show as they come (not in the
  // history); the conversation comes from its payload.
  await untilCount(page, "#progress li[data-type=draft]", 2)
  expect(await page.textContent("#progress li[data-type=draft] .event-fields")).toMatch(/^\{"n":\d,"of":6\}$/)
  await page.waitForFunction(() => /Draft \d: queues hum, workers wake…/.test(document.querySelector("#progress-stream")?.textContent ?? ""))
  await untilCount(page, "#history li[data-tag=TurnCompleted]", 2)
  await page.waitForSelector("#history li[data-tag=TaskCompleted]", { timeout: 20_000 })
  expect(await page.locator("#history li").count()).toBe(1 + 6 * 2) // enqueued, then claimed + turn/completion ×6
  expect(await page.locator("#progress li[data-type=completion_delta]").count()).toBe(0) // those make up the streamed reply
  expect(await page.textContent("#detail-status")).toContain("completed")
  // The query and at least the drafts of the five checkpointed turns (the final turn's payload reaches the
  // history only once the completion records it).
  expect(await page.locator("#detail-conversation .msg").count()).toBeGreaterThanOrEqual(6)
  // Later checkpoints are shown as what they changed.
  expect(await page.locator("#history li[data-tag=TurnCompleted]", { hasText: "payload changes" }).count()).toBeGreaterThan(0)
  expect(await page.textContent("#detail-result")).toContain("\"drafts\": 6")

  // The counts change without a reload.
  await untilAtLeast(page, "#count-completed .card-value", 6, 20_000)
  await untilAtLeast(page, "#count-failed .card-value", 1)
  await page.waitForSelector("#alerts [data-key=no-workers-reviewer]")
  expect(await page.textContent("#alerts [data-key=no-workers-reviewer]")).toContain("2 task(s) waiting")
  await page.waitForSelector("#agents-table tr[data-agent=reviewer] .badge.warn")

  // Cancel the running task from its detail view (opened from the "processing" list).
  await page.click("#status-tabs button[data-status=processing]")
  await page.click(`#tasks-table a.task-link:text-is("${held}")`)
  await untilText(page, "#detail-status", "processing")
  await page.fill("#steer-text", "Make it rhyme.")
  await page.click("#steer-form button[type=submit]")
  await page.waitForSelector("#history li[data-tag=TaskSteered]")
  expect(await page.textContent("#history li[data-tag=TaskSteered] .event-fields")).toContain("Make it rhyme.")
  await page.click("#cancel-button")
  await page.click("#cancel-yes")
  await untilText(page, "#detail-status", "cancelled")
  await page.waitForSelector("#history li[data-tag=TaskCancelled]")
  expect(await orchestrator.getTaskStatus(held)).toBe("cancelled")
  expect(await page.isHidden("#detail-actions")).toBe(true)
  await untilAtLeast(page, "#count-cancelled .card-value", 1)
  await page.waitForSelector(`#tasks-table tr[data-task="${held}"]`, { state: "detached" })

  // The metrics projection reaches the charts; then the picture for the docs.
  await page.waitForSelector("#throughput-chart rect.s-completed", { timeout: 20_000 })
  await page.waitForSelector("#latency-chart circle")
  expect(await page.evaluate("window.marker")).toBe("no reload")
  expect(pageErrors).toEqual([])
  expect(consoleErrors, JSON.stringify(consoleErrors)).toEqual([])
  await page.selectOption("#window", "15m")
  await page.waitForSelector("#timeline-sub:has-text('15 intervals')")
  await page.click("#status-tabs button[data-status=completed]")
  await untilCount(page, "#tasks-table tr[data-task]", 6)
  await page.evaluate(`location.hash = "task=${long}"`)
  await untilText(page, "#detail-status", "completed")
  await untilText(page, "#workers-table tbody tr td:nth-child(4)", "0") // the workers hold nothing now
  mkdirSync(outputDir, { recursive: true })
  await page.screenshot({ path: join(outputDir, "dashboard.png"), fullPage: true })

  // Once its data expired (only the history is left), the open task's conversation comes from the server's fold of
  // its history: the last whole payload and the checkpoint deltas after it.
  const store = runtimeFor(keyspace)
  try {
    await store.runPromise(exec([{ _tag: "Expire", taskId: long, now: Date.now() }]))
  } finally {
    await store.dispose()
  }
  await untilText(page, "#detail-status", "expired")
  expect(await page.locator("#detail-conversation .msg").count()).toBeGreaterThanOrEqual(6)
})

it.skipIf(!existsSync(chromiumPath))("warns when the metrics are stalled and nobody projects them", { timeout: 60_000 }, async () => {
  const ks = freshKeyspace()
  const worker = new Orchestrator({ ...testRedisOptions, ...ks, projectMetrics: false, observabilityConfig: new ObservabilityConfig({ port: 0 }) })
  worker.registerRunner({ agent: writer })
  // A log entry two minutes old that nobody folded (the gauge reads only its stream id).
  const conn = rawClient()
  await conn.xadd(partitionKeys(ks, 0).events, `${Date.now() - 120_000}-0`, "e", "{}")
  conn.disconnect()
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: browserArgs })
  try {
    await worker.start()
    const page = await browser.newPage()
    page.setDefaultTimeout(15_000)
    await page.goto(`${worker.observabilityUrl!}/observability`)
    await page.waitForSelector("#alerts [data-key=metrics-stalled]")
    const text = await page.textContent("#alerts [data-key=metrics-stalled]")
    expect(text).toMatch(/miss the last 2\.\d min of events/)
    expect(text).toContain("no process projects them")
  } finally {
    await browser.close()
    await worker.stop()
  }
})
