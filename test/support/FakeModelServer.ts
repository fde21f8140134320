/**
 * A scripted stand-in for an OpenAI-compatible model provider: `POST …/chat/completions`, answered in
 * JSON or, for `stream: true`, as Server-Sent Events, from a script of replies (text, tool calls, final
 * outputs, HTTP errors with Retry-After, latency). Every request is recorded, with whether the client
 * aborted it. Reached through the real `openai` client, over loopback HTTP (`startFakeModelServer`) or
 * without a network (`scriptedFetch`, for demos).
 *
 * Dependency-free (node:http only) so a demo can import it. Not a model: it answers the script in order.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"

export interface ToolCallSpec {
  readonly id?: string
  readonly name: string
  /** An object is sent as its JSON; a string as is (so a test can send broken JSON). */
  readonly arguments: string | object
}

interface Common {
  /** Wait this long before answering (the client may abort meanwhile). */
  readonly delayMs?: number
  readonly usage?: { readonly promptTokens: number; readonly completionTokens: number }
}

export type Reply =
  | Common & { readonly type: "text"; readonly content: string }
  | Common & { readonly type: "tools"; readonly calls: ReadonlyArray<ToolCallSpec>; readonly content?: string | null }
  | Common & { readonly type: "refusal"; readonly refusal: string }
  | Common & {
    readonly type: "error"
    readonly status: number
    readonly message?: string
    /** The `retry-after` header, as sent (seconds or an HTTP date). */
    readonly retryAfter?: string
  }
  | Common & { readonly type: "raw"; readonly status: number; readonly body: string }

export const reply = {
  text: (content: string, options: Common = {}): Reply => ({ type: "text", content, ...options }),
  toolCalls: (calls: ReadonlyArray<ToolCallSpec>, options: Common & { content?: string | null } = {}): Reply => ({
    type: "tools",
    calls,
    ...options
  }),
  /** A call of the `final_output` tool with these arguments. */
  finalOutput: (output: string | object, options: Common = {}): Reply => ({
    type: "tools",
    calls: [{ name: "final_output", arguments: output }],
    ...options
  }),
  refusal: (refusal: string, options: Common = {}): Reply => ({ type: "refusal", refusal, ...options }),
  error: (status: number, options: Common & { message?: string; retryAfter?: string } = {}): Reply => ({
    type: "error",
    status,
    ...options
  }),
  raw: (status: number, body: string, options: Common = {}): Reply => ({ type: "raw", status, body, ...options })
}

/** Replies in order, or a function of the request. */
export type Script = ReadonlyArray<Reply> | ((request: RecordedRequest) => Reply)

export interface RecordedRequest {
  readonly index: number
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  /** The parsed JSON body (model, messages, tools, tool_choice, stream …). */
  readonly body: any
  readonly receivedAt: number
  /** Set when the answer was fully sent. */
  respondedAt?: number
  /** Set when the client went away before the answer was fully sent. */
  abortedAt?: number
}

interface Answer {
  readonly status: number
  readonly headers: Record<string, string>
  /** One string for a JSON body, several for the events of a stream. */
  readonly chunks: ReadonlyArray<string>
}

const toolCallsOf = (r: Extract<Reply, { type: "tools" }>, index: number) =>
  r.calls.map((c, i) => ({
    id: c.id ?? `call_${index}_${i}`,
    type: "function" as const,
    function: { name: c.name, arguments: typeof c.arguments === "string" ? c.arguments : JSON.stringify(c.arguments) }
  }))

/** The answer to a request, as the HTTP server and the scripted fetch both send it. */
const answer = (r: Reply, request: RecordedRequest): Answer => {
  if (r.type === "error") {
    return {
      status: r.status,
      headers: { "content-type": "application/json", ...(r.retryAfter !== undefined ? { "retry-after": r.retryAfter } : {}) },
      chunks: [JSON.stringify({ error: { message: r.message ?? `scripted error ${r.status}`, type: "scripted", code: null } })]
    }
  }
  if (r.type === "raw") return { status: r.status, headers: { "content-type": "application/json" }, chunks: [r.body] }
  const body = request.body
  const id = `chatcmpl-${request.index}`
  const created = Math.floor(request.receivedAt / 1000)
  const toolCalls = r.type === "tools" ? toolCallsOf(r, request.index) : []
  const content = r.type === "text" ? r.content : r.type === "tools" ? r.content ?? null : null
  const refusal = r.type === "refusal" ? r.refusal : null
  const finishReason = toolCalls.length > 0 ? "tool_calls" : "stop"
  const promptTokens = r.usage?.promptTokens ?? Math.ceil(JSON.stringify(body.messages ?? []).length / 4)
  const completionTokens = r.usage?.completionTokens ??
    Math.ceil(((content ?? "").length + JSON.stringify(toolCalls).length) / 4)
  const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens }
  if (body.stream !== true) {
    const message = { role: "assistant", content, refusal, ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}) }
    return {
      status: 200,
      headers: { "content-type": "application/json" },
      chunks: [JSON.stringify({
        id,
        object: "chat.completion",
        created,
        model: body.model,
        choices: [{ index: 0, message, finish_reason: finishReason, logprobs: null }],
        usage
      })]
    }
  }
  const chunk = (delta: object, finish: string | null = null) =>
    `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }] })}\n\n`
  const pieces = (s: string) => s.match(/.{1,8}/gs) ?? []
  const events = [chunk({ role: "assistant", content: "" })]
  for (const p of pieces(content ?? "")) events.push(chunk({ content: p }))
  for (const p of pieces(refusal ?? "")) events.push(chunk({ refusal: p }))
  toolCalls.forEach((c, i) => {
    events.push(chunk({ tool_calls: [{ index: i, id: c.id, type: "function", function: { name: c.function.name, arguments: "" } }] }))
    for (const p of pieces(c.function.arguments)) events.push(chunk({ tool_calls: [{ index: i, function: { arguments: p } }] }))
  })
  events.push(chunk({}, finishReason))
  if (body.stream_options?.include_usage) {
    events.push(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, choices: [], usage })}\n\n`)
  }
  events.push("data: [DONE]\n\n")
  return { status: 200, headers: { "content-type": "text/event-stream", "cache-control": "no-cache" }, chunks: events }
}

/** The script as a queue: `next` takes the reply for a request (a 500 once the script is used up). */
const scripted = (script: Script) => {
  const queue = typeof script === "function" ? [] : [...script]
  return {
    push: (...replies: ReadonlyArray<Reply>) => void queue.push(...replies),
    next: (request: RecordedRequest): Reply =>
      typeof script === "function"
        ? script(request)
        : queue.shift() ?? reply.error(500, { message: `fake model: script exhausted at request ${request.index}` })
  }
}

const record = (requests: Array<RecordedRequest>, path: string, headers: Record<string, string>, text: string) => {
  const request: RecordedRequest = { index: requests.length, path, headers, body: JSON.parse(text || "{}"), receivedAt: Date.now() }
  requests.push(request)
  return request
}

export interface FakeModelServer {
  /** For the openai client's `baseURL`. */
  readonly baseURL: string
  readonly requests: ReadonlyArray<RecordedRequest>
  /** Adds replies to the script (array scripts only). */
  readonly push: (...replies: ReadonlyArray<Reply>) => void
  readonly close: () => Promise<void>
}

/** Starts the server on a free loopback port. */
export const startFakeModelServer = async (script: Script = []): Promise<FakeModelServer> => {
  const requests: Array<RecordedRequest> = []
  const replies = scripted(script)
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    let text = ""
    for await (const part of req) text += part
    if (req.method !== "POST" || !req.url?.endsWith("/chat/completions")) {
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "not found" } }))
      return
    }
    const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]))
    const request = record(requests, req.url, headers, text)
    let gone = false
    let wake = () => {}
    res.on("close", () => {
      if (!res.writableFinished) {
        gone = true
        request.abortedAt = Date.now()
        wake()
      }
    })
    const r = replies.next(request)
    const out = answer(r, request)
    if (r.delayMs) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, r.delayMs)
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    if (gone) return
    res.writeHead(out.status, out.headers)
    for (const c of out.chunks) res.write(c)
    res.end(() => (request.respondedAt = Date.now()))
  }
  const server = createServer((req, res) => {
    handle(req, res).catch((e) => res.writeHead(500).end(String(e)))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as AddressInfo
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    push: replies.push,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
  }
}

/**
 * The same script as a `fetch` for the openai client (`new OpenAI({ fetch, baseURL: "http://fake/v1" })`):
 * no socket, no port. Delays honour the request's abort signal.
 */
export const scriptedFetch = (script: Script) => {
  const requests: Array<RecordedRequest> = []
  const replies = scripted(script)
  const fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    const headers = Object.fromEntries(new Headers(init?.headers).entries())
    const request = record(requests, url.pathname, headers, typeof init?.body === "string" ? init.body : "")
    const r = replies.next(request)
    const out = answer(r, request)
    const signal = init?.signal
    if (r.delayMs) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, r.delayMs)
        signal?.addEventListener("abort", () => {
          clearTimeout(timer)
          request.abortedAt = Date.now()
          reject(signal.reason ?? new DOMException("aborted", "AbortError"))
        }, { once: true })
      })
    }
    request.respondedAt = Date.now()
    return new Response(out.chunks.join(""), { status: out.status, headers: out.headers })
  }
  return { fetch: fetch as typeof globalThis.fetch, requests: requests as ReadonlyArray<RecordedRequest>, push: replies.push }
}
