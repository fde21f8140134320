/**
 * The dashboard's only script (plain browser JavaScript, no build step, no dependencies). It reads the
 * JSON API under /observability/api, draws the timeline charts as SVG by hand, and stays live over
 * Server-Sent Events (/observability/api/events): each event refreshes the counts and, when it belongs to
 * the open task, that task's history; what the open task's running turn emits (`emit` events: progress, not
 * history) is listed as it comes, and a streamed model reply (`completion_delta`) is shown as it grows.
 * Actions (cancel, steer) go to the control API (/api/tasks/…).
 *
 * Auth: when the API answers 401 the page asks for the token and keeps it in sessionStorage (this tab
 * only); fetches send it as a bearer token, the event stream as `?token=` (EventSource cannot set headers).
 * All data is put into the page with textContent / attributes, never as HTML.
 */
"use strict"

const API = "/observability/api"
const STATUSES = ["queued", "processing", "backoff", "waiting", "completed", "failed", "cancelled"]
const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"])
const TOKEN_KEY = "factorial.dashboard.token"
const PAGE_SIZE = 25
/** A valid task id (streams/TaskEvent.ts). */
const TASK_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/
/** Emitted events kept for the open task (the latest). */
const MAX_EMITS = 50
const SVG_NS = "http://www.w3.org/2000/svg"

const state = {
  window: "1h",
  status: "processing",
  filter: { agent: "", owner: "" },
  tasks: [],
  cursor: null,
  pages: 0,
  openTask: null,
  lastEventId: null,
  source: null,
  counts: {},
  /** The open task's emitted events since it was opened (newest last), and the model reply streaming in. */
  emits: [],
  streamText: "",
  streamEnded: false
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id)

/** Creates an element; attrs set as attributes (or `on*` listeners), children as nodes or text. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v === true ? "" : String(v))
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag)
  for (const [k, v] of Object.entries(attrs ?? {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v))
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

const fmtInt = (n) => (n ?? 0).toLocaleString()
function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—"
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`
  if (ms < 86_400_000) return `${(ms / 3_600_000).toFixed(1)} h`
  return `${(ms / 86_400_000).toFixed(1)} d`
}
const fmtPercent = (r) => (r === null || r === undefined ? "—" : `${(r * 100).toFixed(r === 1 ? 0 : 1)} %`)
const fmtPerMinute = (perSecond) => `${(perSecond * 60).toFixed(perSecond * 60 >= 10 ? 0 : 2)} /min`
const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
function fmtTime(ms) {
  const d = new Date(ms)
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`
}
const fmtDate = (ms) => (ms ? new Date(ms).toLocaleString() : "—")
const ago = (ms) => (ms ? `${fmtDuration(Math.max(0, Date.now() - ms))} ago` : "—")
function short(value, max = 160) {
  const s = typeof value === "string" ? value : JSON.stringify(value)
  if (s === undefined) return ""
  return s.length > max ? `${s.slice(0, max - 1)}…` : s
}
const statusBadge = (status) => h("span", { class: `badge status-${status ?? "unknown"}` }, status ?? "unknown")

/** Runs `fn` at most once per `ms` for bursts of calls (the first call schedules, the rest join it). */
const timers = new Map()
function soon(name, ms, fn) {
  if (timers.has(name)) return
  timers.set(name, setTimeout(() => {
    timers.delete(name)
    fn()
  }, ms))
}

// ---------------------------------------------------------------------------------------------------------
// API access and the token

class Unauthorized extends Error {}
const getToken = () => sessionStorage.getItem(TOKEN_KEY)

async function api(path, init = {}) {
  const headers = { accept: "application/json", ...(init.headers ?? {}) }
  const token = getToken()
  if (token) headers.authorization = `Bearer ${token}`
  if (init.body !== undefined) headers["content-type"] = "application/json"
  const res = await fetch(path, { ...init, headers })
  if (res.status === 401) {
    askToken(token ? "The server refused this token." : "")
    throw new Unauthorized("unauthorized")
  }
  const body = await res.json().catch(() => null)
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`)
  return body
}

function askToken(message) {
  const dialog = $("token-dialog")
  $("token-error").textContent = message ?? ""
  if (!dialog.open) {
    dialog.showModal()
    $("token-input").focus()
  }
}

function setupToken() {
  $("token-button").addEventListener("click", () => askToken(""))
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault()
    const value = $("token-input").value.trim()
    if (!value) return
    sessionStorage.setItem(TOKEN_KEY, value)
    $("token-input").value = ""
    $("token-dialog").close()
    refreshAll()
    connectLive()
  })
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY)
    $("token-error").textContent = "Token forgotten."
  })
  $("token-cancel").addEventListener("click", () => $("token-dialog").close())
}

/** Shows a failed load without breaking the page (401s already opened the token dialog). */
function report(where, error) {
  if (error instanceof Unauthorized) return
  showAlert(`load-${where}`, `Could not load ${where}: ${error.message}`, "error")
}

function showAlert(key, text, kind = "warning") {
  const alerts = $("alerts")
  let el = alerts.querySelector(`[data-key="${key}"]`)
  if (!el) {
    el = h("p", { class: `alert ${kind}`, "data-key": key })
    alerts.append(el)
  }
  el.textContent = text
}
function clearAlert(key) {
  $("alerts").querySelector(`[data-key="${key}"]`)?.remove()
}

// ---------------------------------------------------------------------------------------------------------
// Overview

function card(label, value, attrs = {}) {
  return h("div", { class: "card", ...attrs }, h("span", { class: "card-label" }, label), h("span", { class: "card-value" }, value))
}

async function loadOverview() {
  try {
    const o = await api(`${API}/overview?window=${state.window}`)
    clearAlert("load-overview")
    state.counts = o.tasksByStatus
    $("status-cards").replaceChildren(
      ...STATUSES.map((s) =>
        card(s[0].toUpperCase() + s.slice(1), fmtInt(o.tasksByStatus[s]), { class: `card status-card status-${s}`, id: `count-${s}` })
      ),
      card("Live workers", fmtInt(o.liveWorkers), { id: "count-live-workers" })
    )
    const t = o.totals
    $("metric-cards").replaceChildren(
      card("Completed / min", (t.throughputPerSecond * 60).toFixed(t.throughputPerSecond * 60 >= 10 ? 0 : 2), { id: "metric-throughput" }),
      card("Success rate", fmtPercent(t.successRate), { id: "metric-success" }),
      card("Enqueued", fmtInt(t.counters.enqueued)),
      card("Completed", fmtInt(t.counters.completed)),
      card("Failed", fmtInt(t.counters.failed)),
      card("Cancelled", fmtInt(t.counters.cancelled)),
      card("Wait p50 / p95 / p99", `${fmtDuration(t.wait.p50Ms)} / ${fmtDuration(t.wait.p95Ms)} / ${fmtDuration(t.wait.p99Ms)}`, { class: "card wide", id: "metric-wait" }),
      card("Run p50 / p95 / p99", `${fmtDuration(t.run.p50Ms)} / ${fmtDuration(t.run.p95Ms)} / ${fmtDuration(t.run.p99Ms)}`, { class: "card wide", id: "metric-run" })
    )
    // One warning per agent with waiting tasks and nobody to pick them up.
    const warned = new Set(o.warnings.map((w) => w.agent))
    for (const el of $("alerts").querySelectorAll("[data-key^='no-workers-']")) {
      if (!warned.has(el.dataset.key.slice("no-workers-".length))) el.remove()
    }
    for (const q of o.queues.filter((x) => x.noLiveWorkers)) {
      showAlert(
        `no-workers-${q.agent}`,
        `No live workers for agent “${q.agent}”: ${fmtInt(q.waiting)} task(s) waiting, the oldest for ${fmtDuration(q.oldestWaitingAgeMs)}.`
      )
    }
    // The timeline is only as fresh as its projection: say when it is stale, and why if nobody projects.
    const m = o.metricsProjection
    if (m.stalled) {
      showAlert(
        "metrics-stalled",
        `The metrics below miss the last ${fmtDuration(m.oldestUnprojectedAgeMs)} of events: ` +
          (m.liveProjectors === 0 ? "no process projects them (projectMetrics is off everywhere, or none runs)." : "the projection is behind.")
      )
    } else clearAlert("metrics-stalled")
    renderStatusTabs()
  } catch (e) {
    report("overview", e)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Timeline charts (hand-drawn SVG)

const CHART = { width: 640, height: 220, left: 52, right: 14, top: 12, bottom: 28 }

/** A round upper bound for an axis of 4 ticks; `integers` keeps the ticks whole (for counts). */
function niceMax(max, integers = false) {
  if (!(max > 0)) return integers ? 4 : 1
  const raw = max / 4
  const pow = 10 ** Math.floor(Math.log10(raw))
  const steps = (integers ? [1, 2, 3, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * pow)
  const step = Math.max(integers ? 1 : 0, steps.find((s) => s >= raw) ?? 10 * pow)
  return step * 4 >= max ? step * 4 : step * Math.ceil(max / step)
}

/** Axes, grid and time labels; returns the scales. */
function drawAxes(el, from, to, yMax, yFormat) {
  const { width, height, left, right, top, bottom } = CHART
  const plotW = width - left - right
  const plotH = height - top - bottom
  const x = (t) => left + ((t - from) / (to - from)) * plotW
  const y = (v) => top + plotH - (v / yMax) * plotH
  const g = svg("g", { class: "axes" })
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4
    g.append(
      svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: i === 0 ? "axis" : "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, yFormat(v))
    )
  }
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4
    g.append(svg("text", { x: x(t), y: height - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "tick" }, fmtClock(t)))
  }
  el.append(g)
  return { x, y, plotW, plotH }
}

function legend(el, items) {
  el.replaceChildren(...items.map(([cls, label]) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), label)))
}

function drawThroughput(tl) {
  const el = $("throughput-chart")
  el.replaceChildren()
  const pts = tl.points
  const from = tl.from
  const to = pts.length ? pts[pts.length - 1].end : tl.to
  const max = Math.max(0, ...pts.map((p) => Math.max(p.counters.completed + p.counters.failed + p.counters.cancelled, p.counters.enqueued)))
  const yMax = niceMax(max, true)
  const { x, y } = drawAxes(el, from, to, yMax, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)))
  const bars = svg("g", { class: "bars" })
  for (const p of pts) {
    const x0 = x(p.start) + 0.5
    const w = Math.max(1, x(p.end) - x(p.start) - 1)
    let base = 0
    for (const [key, cls] of [["completed", "s-completed"], ["failed", "s-failed"], ["cancelled", "s-cancelled"]]) {
      const n = p.counters[key]
      if (n > 0) {
        bars.append(svg("rect", { x: x0, width: w, y: y(base + n), height: y(base) - y(base + n), class: cls },
          svg("title", {}, `${fmtClock(p.start)}: ${n} ${key}`)))
        base += n
      }
    }
  }
  el.append(bars)
  const line = pts.map((p, i) => `${i === 0 ? "M" : "L"}${(x(p.start) + x(p.end)) / 2},${y(p.counters.enqueued)}`).join(" ")
  if (pts.length) el.append(svg("path", { d: line, class: "line s-enqueued" }))
  legend($("throughput-legend"), [["s-completed", "completed"], ["s-failed", "failed"], ["s-cancelled", "cancelled"], ["s-enqueued", "enqueued (line)"]])
}

function drawLatency(tl) {
  const el = $("latency-chart")
  el.replaceChildren()
  const pts = tl.points
  const from = tl.from
  const to = pts.length ? pts[pts.length - 1].end : tl.to
  const series = [
    ["s-wait50", "wait p50", (p) => p.wait.p50Ms],
    ["s-wait95", "wait p95", (p) => p.wait.p95Ms],
    ["s-run50", "run p50", (p) => p.run.p50Ms],
    ["s-run95", "run p95", (p) => p.run.p95Ms]
  ]
  const values = pts.flatMap((p) => series.map(([, , f]) => f(p))).filter((v) => v !== null)
  const yMax = niceMax(Math.max(0, ...values))
  const { x, y } = drawAxes(el, from, to, yMax, fmtDuration)
  for (const [cls, label, f] of series) {
    let d = ""
    let pen = false
    const dots = svg("g", { class: cls })
    for (const p of pts) {
      const v = f(p)
      if (v === null) {
        pen = false
        continue
      }
      const cx = (x(p.start) + x(p.end)) / 2
      d += `${pen ? "L" : "M"}${cx},${y(v)} `
      pen = true
      dots.append(svg("circle", { cx, cy: y(v), r: 2.5 }, svg("title", {}, `${fmtClock(p.start)}: ${label} ${fmtDuration(v)}`)))
    }
    if (d) el.append(svg("path", { d, class: `line ${cls}` }))
    el.append(dots)
  }
  legend($("latency-legend"), series.map(([cls, label]) => [cls, label]))
}

function timelineTable(tl) {
  const head = h("tr", {}, ["From", "Enqueued", "Completed", "Failed", "Cancelled", "Success", "Wait p50", "Wait p95", "Run p50", "Run p95"]
    .map((c) => h("th", { scope: "col" }, c)))
  const rows = tl.points.filter((p) => p.counters.enqueued + p.counters.started + p.counters.completed + p.counters.failed + p.counters.cancelled > 0)
    .map((p) => h("tr", {},
      h("th", { scope: "row" }, fmtClock(p.start)),
      h("td", {}, p.counters.enqueued), h("td", {}, p.counters.completed), h("td", {}, p.counters.failed), h("td", {}, p.counters.cancelled),
      h("td", {}, fmtPercent(p.successRate)),
      h("td", {}, fmtDuration(p.wait.p50Ms)), h("td", {}, fmtDuration(p.wait.p95Ms)),
      h("td", {}, fmtDuration(p.run.p50Ms)), h("td", {}, fmtDuration(p.run.p95Ms))))
  $("timeline-table").replaceChildren(h("thead", {}, head), h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 10 }, "No activity in this window."))))
}

async function loadTimeline() {
  try {
    const tl = await api(`${API}/timeline?window=${state.window}`)
    clearAlert("load-timeline")
    $("timeline-sub").textContent = `· ${tl.points.length} intervals of ${fmtDuration(tl.pointSeconds * 1000)}`
    drawThroughput(tl)
    drawLatency(tl)
    timelineTable(tl)
  } catch (e) {
    report("timeline", e)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Agents and workers

async function loadAgents() {
  try {
    const { agents } = await api(`${API}/agents?window=${state.window}`)
    clearAlert("load-agents")
    const cols = ["Agent", "Waiting", "In flight", "Oldest waiting", "Live workers", "Completed", "Failed", "Success", "Throughput", "Wait p50 / p95", "Run p50 / p95"]
    $("agents-table").replaceChildren(
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, agents.length === 0 ? h("tr", {}, h("td", { colspan: cols.length }, "No agents yet.")) : agents.map((a) =>
        h("tr", { "data-agent": a.agent },
          h("th", { scope: "row" }, a.agent, a.noLiveWorkers ? h("span", { class: "badge warn", title: "tasks are waiting and no worker is live" }, "no live workers") : null),
          h("td", {}, fmtInt(a.waiting)),
          h("td", {}, fmtInt(a.inFlight)),
          h("td", {}, fmtDuration(a.oldestWaitingAgeMs)),
          h("td", {}, fmtInt(a.liveWorkers)),
          h("td", {}, fmtInt(a.totals.counters.completed)),
          h("td", {}, fmtInt(a.totals.counters.failed)),
          h("td", {}, fmtPercent(a.totals.successRate)),
          h("td", {}, fmtPerMinute(a.totals.throughputPerSecond)),
          h("td", {}, `${fmtDuration(a.totals.wait.p50Ms)} / ${fmtDuration(a.totals.wait.p95Ms)}`),
          h("td", {}, `${fmtDuration(a.totals.run.p50Ms)} / ${fmtDuration(a.totals.run.p95Ms)}`))))
    )
    $("agent-names").replaceChildren(...agents.map((a) => h("option", { value: a.agent })))
  } catch (e) {
    report("agents", e)
  }
}

async function loadWorkers() {
  try {
    const { workers } = await api(`${API}/workers`)
    clearAlert("load-workers")
    const cols = ["Worker", "State", "Idle", "Holding", "Agents"]
    $("workers-table").replaceChildren(
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, workers.length === 0 ? h("tr", {}, h("td", { colspan: cols.length }, "No worker has read a queue yet.")) : workers.map((w) =>
        h("tr", {},
          h("th", { scope: "row" }, h("code", {}, w.name)),
          h("td", {}, h("span", { class: `badge ${w.live ? "ok" : "muted"}` }, w.live ? "live" : "gone")),
          h("td", {}, fmtDuration(w.idleMs)),
          h("td", {}, fmtInt(w.pending)),
          h("td", {}, w.agents.map((a) => a.agent).join(", ")))))
    )
  } catch (e) {
    report("workers", e)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tasks by status

function renderStatusTabs() {
  $("status-tabs").replaceChildren(...STATUSES.map((s) =>
    h("button", {
      type: "button",
      class: `tab status-${s}`,
      "aria-pressed": s === state.status ? "true" : "false",
      "data-status": s,
      onclick: () => {
        state.status = s
        renderStatusTabs()
        loadTasks(true)
      }
    }, s, " ", h("span", { class: "tab-count" }, fmtInt(state.counts[s])))))
}

function tasksQuery(cursor) {
  const p = new URLSearchParams({ status: state.status, limit: String(PAGE_SIZE) })
  if (state.filter.agent) p.set("agent", state.filter.agent)
  if (state.filter.owner) p.set("owner", state.filter.owner)
  if (cursor) p.set("cursor", cursor)
  return `${API}/tasks?${p}`
}

/** First page (reset) or the next one. A live refresh reloads the first page unless the user paged on. */
async function loadTasks(reset) {
  try {
    const page = await api(tasksQuery(reset ? null : state.cursor))
    clearAlert("load-tasks")
    state.tasks = reset ? page.tasks : [...state.tasks, ...page.tasks]
    state.cursor = page.nextCursor
    state.pages = reset ? 1 : state.pages + 1
    renderTasks(page)
  } catch (e) {
    report("tasks", e)
  }
}

function renderTasks(page) {
  const cols = ["Task", "Agent", "Owner", "Status", "In this status", "Turns", "Retries", "Worker"]
  const rows = state.tasks.map((t) =>
    h("tr", { "data-task": t.id, class: t.id === state.openTask ? "selected" : undefined },
      h("th", { scope: "row" }, h("a", { href: `#task=${encodeURIComponent(t.id)}`, class: "task-link" }, t.id)),
      h("td", {}, t.agent),
      h("td", {}, t.ownerId),
      h("td", {}, statusBadge(t.status), t.cancelRequested && !TERMINAL.has(t.status) ? h("span", { class: "badge warn" }, "cancel requested") : null),
      h("td", { title: fmtDate(t.enteredAt) }, ago(t.enteredAt)),
      h("td", {}, t.turns),
      h("td", {}, t.retries),
      h("td", {}, t.worker ? h("code", {}, t.worker) : "—")))
  $("tasks-table").replaceChildren(
    h("caption", { class: "visually-hidden" }, `Tasks ${state.status}`),
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: cols.length }, state.cursor ? "No matching task on this page: load more." : `No ${state.status} tasks.`)))
  )
  $("tasks-more").hidden = !state.cursor
  $("tasks-info").textContent = `${state.tasks.length} shown · ${page.scanned} index entries on the last page`
}

function setupTasks() {
  $("task-filter").addEventListener("submit", (e) => {
    e.preventDefault()
    state.filter = { agent: $("filter-agent").value.trim(), owner: $("filter-owner").value.trim() }
    loadTasks(true)
  })
  $("task-filter").addEventListener("reset", () => {
    state.filter = { agent: "", owner: "" }
    setTimeout(() => loadTasks(true))
  })
  $("tasks-more").addEventListener("click", () => loadTasks(false))
}

// ---------------------------------------------------------------------------------------------------------
// Task detail

/** The key fields of an event, as short text. */
function eventFields(e) {
  switch (e._tag) {
    case "TaskEnqueued": return `payload ${short(e.payload)} · max retries ${e.maxRetries}`
    case "TaskClaimed": return `attempt ${e.lease} · worker ${e.worker}`
    case "TurnCompleted": return `turn ${e.turn} · attempt ${e.lease} · steering applied ${e.steeringApplied} · ${e.payloadDelta ? `payload changes ${short(e.payloadDelta)}` : `payload ${short(e.payload)}`}`
    case "TaskCompleted": return `output ${short(e.output)} · steering applied ${e.steeringApplied}, unapplied ${e.steeringUnapplied}`
    case "TaskFailed": return `${e.decision} · ${e.error.kind}: ${e.error.message} · retries ${e.retries}${e.retryAt ? ` · retry at ${fmtTime(e.retryAt)}` : ""}`
    case "TaskSteered": return `${e.messages.length} message(s): ${short(e.messages.map((m) => m?.content ?? m))}`
    case "TaskCancelRequested": return "cancel requested while running"
    case "TaskCancelled": return e.lease !== undefined ? `running attempt ${e.lease} interrupted` : "cancelled while not running"
    case "TaskReleased": return `attempt ${e.lease} handed back (shutdown)`
    case "TaskRecovered": return `attempt ${e.lease} lost its worker · ${e.decision} · retries ${e.retries}`
    case "TaskBackoffElapsed": return "backoff over, queued again"
    case "TaskExpired": return "hot data expired; history kept"
    case "TaskWaiting": return `turn ${e.turn} · waiting for ${e.pending.map((i) => `${i.kind} ${i.id}`).join(", ")}${e.deadline ? ` · deadline ${fmtTime(e.deadline)}` : ""}${e.resumed ? " · all in already" : ""}`
    case "ToolResultReceived": return `result ${e.id}: ${short(e.result)}${e.resumed ? " · resumed" : ""}`
    case "ChildTasksSpawned": return `spawned ${e.children.map((c) => `${c.agent} ${c.id}`).join(", ")}`
    case "ChildTaskFinished": return `child ${e.childId} ${e.status}${e.output !== undefined ? ` · ${short(e.output)}` : ""}${e.error ? ` · ${e.error.message}` : ""}${e.resumed ? " · resumed" : ""}`
    case "TaskWaitTimedOut": return `timed out: ${e.ids.join(", ")} · ${e.decision}`
    default: return short(e)
  }
}

/**
 * The agent conversation, when the payload carries `messages` (the LLM agent's payload does): the task's, or
 * (an expired task has none) the one its last checkpoint left, which the server folds from the history.
 */
function conversationOf(detail) {
  const payloads = [detail.task?.payload, detail.lastPayload]
  const payload = payloads.find((p) => p && Array.isArray(p.messages))
  return payload ? payload.messages : null
}

function messageText(m) {
  if (typeof m === "string") return m
  if (m === null || typeof m !== "object") return JSON.stringify(m)
  const parts = []
  if (typeof m.content === "string") parts.push(m.content)
  else if (Array.isArray(m.content)) parts.push(m.content.map((c) => c?.text ?? JSON.stringify(c)).join("\n"))
  else if (m.content !== undefined && m.content !== null) parts.push(JSON.stringify(m.content))
  for (const call of m.tool_calls ?? m.toolCalls ?? []) {
    const fn = call.function ?? call
    parts.push(`→ ${fn.name}(${short(fn.arguments ?? fn.args ?? "", 400)})`)
  }
  return parts.join("\n")
}

function renderDetail(d) {
  const t = d.task
  const status = d.status ?? t?.status
  $("detail-id").textContent = state.openTask
  const field = (label, value) => [h("dt", {}, label), h("dd", {}, value)]
  $("detail-fields").replaceChildren(...[
    field("Status", h("span", { id: "detail-status" }, statusBadge(status))),
    t && field("Agent", t.agent),
    t && field("Owner", t.ownerId),
    t && field("Created", fmtDate(t.createdAt)),
    t && field("Updated", fmtDate(t.updatedAt)),
    t && field("Attempts", t.attempts),
    t && field("Turns", t.turns),
    t && field("Retries", `${t.retries} of ${t.maxRetries}`),
    t?.worker && field("Worker", h("code", {}, t.worker)),
    t?.cancelRequested && field("Cancel", "requested"),
    t && field("Pending steering", t.pendingSteering),
    t?.lastHeartbeatAt && field("Last heartbeat", ago(t.lastHeartbeatAt))
  ].filter(Boolean).flat())

  const live = t && !TERMINAL.has(status)
  $("detail-actions").hidden = !live
  if (!live) $("cancel-confirm").hidden = true
  $("cancel-button").hidden = !live || !$("cancel-confirm").hidden

  const result = []
  if (t?.output !== undefined) result.push(h("h3", {}, "Output"), h("pre", { class: "json" }, JSON.stringify(t.output, null, 2)))
  if (t?.error) result.push(h("h3", {}, "Error"), h("p", { class: "error" }, `${t.error.kind}: ${t.error.message}`))
  $("detail-result").replaceChildren(...result)

  const messages = conversationOf(d)
  $("detail-conversation").replaceChildren(...(messages ? [
    h("h3", {}, "Conversation"),
    h("ol", { class: "conversation" }, messages.map((m) =>
      h("li", { class: `msg role-${m?.role ?? "other"}` }, h("span", { class: "role" }, m?.role ?? "message"), h("div", { class: "msg-text" }, messageText(m)))))
  ] : []))

  const first = d.history[0]?.at
  $("history-info").textContent = d.historyStart > 0
    ? `Showing the last ${d.history.length} of ${d.historyLength} events.`
    : `${d.historyLength} event(s).`
  $("history").replaceChildren(...d.history.map((env) =>
    h("li", { class: `event tag-${env.event._tag}`, "data-tag": env.event._tag, "data-version": env.version },
      h("div", { class: "event-head" },
        h("time", { datetime: new Date(env.at).toISOString() }, fmtTime(env.at)),
        h("span", { class: "delta" }, first !== undefined ? `+${fmtDuration(env.at - first)}` : ""),
        h("strong", { class: "event-type" }, env.event._tag)),
      h("div", { class: "event-fields" }, eventFields(env.event)),
      h("details", {}, h("summary", {}, "JSON"), h("pre", { class: "json" }, JSON.stringify(env, null, 2))))))
  for (const row of document.querySelectorAll("#tasks-table tr[data-task]")) row.classList.toggle("selected", row.dataset.task === state.openTask)
}

async function loadTask(id) {
  try {
    const d = await api(`${API}/tasks/${encodeURIComponent(id)}`)
    if (state.openTask !== id) return
    renderDetail(d)
  } catch (e) {
    if (e instanceof Unauthorized) return
    if (state.openTask !== id) return
    $("detail-id").textContent = id
    $("detail-fields").replaceChildren(h("dt", {}, "Error"), h("dd", {}, e.message))
    $("history").replaceChildren()
    $("detail-actions").hidden = true
  }
}

function openFromHash() {
  const m = /^#task=(.+)$/.exec(location.hash)
  const id = m ? decodeURIComponent(m[1]) : null
  if (id === state.openTask) return
  state.openTask = id
  state.emits = []
  state.streamText = ""
  state.streamEnded = false
  renderProgress()
  // The stream carries the emits of the open task only: reopen it for this one (it resumes from the last
  // task event seen, so no task event is missed).
  if (state.source) connectLive()
  $("task-detail").hidden = !id
  $("action-status").textContent = ""
  $("cancel-confirm").hidden = true
  if (id) {
    $("detail-id").textContent = id
    loadTask(id).then(() => $("detail-heading").focus())
  }
}

async function action(path, body, done) {
  const id = state.openTask
  $("action-status").textContent = "Sending…"
  try {
    await api(`/api/tasks/${encodeURIComponent(id)}/${path}`, { method: "POST", body: JSON.stringify(body ?? {}) })
    $("action-status").textContent = done
    loadTask(id)
  } catch (e) {
    $("action-status").textContent = e instanceof Unauthorized ? "The API needs a token: enter it and try again." : `Failed: ${e.message}`
  }
}

function setupDetail() {
  window.addEventListener("hashchange", openFromHash)
  $("detail-close").addEventListener("click", () => {
    history.replaceState(null, "", location.pathname + location.search)
    openFromHash()
    $("tasks-heading").focus()
  })
  $("cancel-button").addEventListener("click", () => {
    $("cancel-button").hidden = true
    $("cancel-confirm").hidden = false
    $("cancel-no").focus()
  })
  $("cancel-no").addEventListener("click", () => {
    $("cancel-confirm").hidden = true
    $("cancel-button").hidden = false
    $("cancel-button").focus()
  })
  $("cancel-yes").addEventListener("click", () => {
    $("cancel-confirm").hidden = true
    $("cancel-button").hidden = false
    action("cancel", undefined, "Cancel sent.")
  })
  $("steer-form").addEventListener("submit", (e) => {
    e.preventDefault()
    const text = $("steer-text").value.trim()
    if (!text) return
    action("steer", { messages: [{ role: "user", content: text }] }, "Steering message sent.").then(() => {
      $("steer-text").value = ""
    })
  })
}

// ---------------------------------------------------------------------------------------------------------
// Live updates

function setLive(kind, text) {
  const el = $("live-status")
  el.dataset.state = kind
  el.textContent = text
}

function onEnvelope(env) {
  setLive("live", `Live · last event ${fmtTime(env.at)}`)
  soon("overview", 500, loadOverview)
  soon("tasks", 800, () => (state.pages <= 1 ? loadTasks(true) : undefined))
  soon("agents", 2000, loadAgents)
  soon("workers", 3000, loadWorkers)
  soon("timeline", 3000, loadTimeline)
  if (env.taskId === state.openTask) {
    // A new attempt's first streamed reply replaces the last one.
    if (env.event._tag === "TaskClaimed") state.streamEnded = true
    soon("detail", 150, () => state.openTask && loadTask(state.openTask))
  }
}

/** The open task's latest emitted events, and the model reply streaming in. */
function renderProgress() {
  const text = state.streamText
  $("progress-stream").hidden = !text
  $("progress-stream").textContent = text
  $("detail-progress").hidden = state.emits.length === 0 && !text
  $("progress").replaceChildren(...state.emits.map((m) =>
    h("li", { class: "event emit", "data-type": m.type },
      h("div", { class: "event-head" },
        h("time", { datetime: new Date(m.at).toISOString() }, fmtTime(m.at)),
        h("strong", { class: "event-type" }, m.type)),
      h("div", { class: "event-fields" }, short(m.data, 300)))))
}

function onEmit(m) {
  if (m.taskId !== state.openTask) return
  if (m.type === "completion_delta" && typeof m.data?.text === "string") {
    // A new model call starts a new reply; the last one stays until then.
    if (state.streamEnded) state.streamText = ""
    state.streamEnded = false
    state.streamText = (state.streamText + m.data.text).slice(-20_000)
  } else {
    if (m.type === "completion") state.streamEnded = true
    state.emits.push(m)
    if (state.emits.length > MAX_EMITS) state.emits.splice(0, state.emits.length - MAX_EMITS)
  }
  soon("progress", 100, renderProgress)
}

function connectLive() {
  state.source?.close()
  const params = new URLSearchParams()
  const token = getToken()
  if (token) params.set("token", token)
  if (state.lastEventId) params.set("lastEventId", state.lastEventId)
  // Progress (emits) only of the open task: a busy namespace's every emit is not this page's business.
  // (A malformed id from the address bar would make the server refuse the stream: then none.)
  if (state.openTask && TASK_ID.test(state.openTask)) params.set("emitTasks", state.openTask)
  else params.set("emits", "none")
  const source = new EventSource(`${API}/events?${params}`)
  state.source = source
  source.addEventListener("ready", (e) => {
    state.lastEventId = e.lastEventId
    setLive("live", "Live")
  })
  source.addEventListener("task", (e) => {
    state.lastEventId = e.lastEventId
    onEnvelope(JSON.parse(e.data))
  })
  // Emitted events carry no id (EventSource keeps the last task event's for a reconnect).
  source.addEventListener("emit", (e) => onEmit(JSON.parse(e.data)))
  source.addEventListener("feed-error", (e) => setLive("error", `Live feed error: ${short(JSON.parse(e.data)?.error?.message ?? "")}`))
  source.onerror = () => {
    if (source !== state.source) return
    if (source.readyState === EventSource.CONNECTING) return setLive("reconnecting", "Reconnecting…")
    // Closed for good (e.g. 401 or 503): find out why, then start a new stream from the last event seen.
    setLive("reconnecting", "Disconnected; retrying…")
    source.close()
    setTimeout(async () => {
      if (source !== state.source) return
      try {
        await api(`${API}/queues`)
        connectLive()
      } catch (e) {
        if (!(e instanceof Unauthorized)) setTimeout(() => source === state.source && connectLive(), 5000)
        else setLive("error", "Needs a token")
      }
    }, 2000)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Start

function refreshAll() {
  loadOverview()
  loadTimeline()
  loadAgents()
  loadWorkers()
  loadTasks(true)
  if (state.openTask) loadTask(state.openTask)
}

function start() {
  setupToken()
  setupTasks()
  setupDetail()
  $("window").addEventListener("change", (e) => {
    state.window = e.target.value
    loadOverview()
    loadTimeline()
    loadAgents()
  })
  renderStatusTabs()
  refreshAll()
  openFromHash()
  connectLive()
  // Gauges (ages, live workers) and the timeline move on without events too.
  setInterval(() => {
    if (document.hidden) return
    loadOverview()
    loadAgents()
    loadWorkers()
  }, 10_000)
  setInterval(() => !document.hidden && loadTimeline(), 30_000)
}

document.addEventListener("DOMContentLoaded", start)
