/**
 * A stand-in model for the demo when no API key is set: a `fetch` that answers OpenAI chat-completion
 * requests by rule, from the conversation it is sent. First it calls every tool it is offered (except
 * `final_output`) with arguments taken from the query; once tool results are in, it answers through
 * `final_output` (or with text). Deterministic, no network, not a model — and says so in its answers.
 */

interface RequestBody {
  readonly model: string
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content?: unknown }>
  readonly tools?: ReadonlyArray<{ readonly function: { readonly name: string; readonly parameters?: unknown } }>
}

const firstUserText = (body: RequestBody): string => {
  const m = body.messages.find((x) => x.role === "user")
  return typeof m?.content === "string" ? m.content : "the question"
}

/** Arguments for a tool from its JSON schema: every string property gets the query, numbers get 2. */
const argumentsFor = (parameters: unknown, query: string): Record<string, unknown> => {
  const props = (parameters as { properties?: Record<string, { type?: unknown }> } | undefined)?.properties ?? {}
  return Object.fromEntries(
    Object.entries(props).map(([k, v]) => {
      const type = Array.isArray(v.type) ? v.type[0] : v.type
      return [k, type === "number" || type === "integer" ? 2 : type === "boolean" ? true : query]
    })
  )
}

const completion = (model: string, message: Record<string, unknown>, finishReason: string) => ({
  id: `demo-${Date.now()}`,
  object: "chat.completion",
  created: Math.floor(Date.now() / 1000),
  model,
  choices: [{ index: 0, message: { role: "assistant", content: null, ...message }, finish_reason: finishReason }],
  usage: { prompt_tokens: 50, completion_tokens: 20, total_tokens: 70 }
})

const answer = (body: RequestBody) => {
  const query = firstUserText(body)
  const toolResults = body.messages.filter((m) => m.role === "tool").map((m) => String(m.content))
  const tools = (body.tools ?? []).map((t) => t.function)
  const working = tools.filter((t) => t.name !== "final_output")
  if (toolResults.length === 0 && working.length > 0) {
    return completion(body.model, {
      tool_calls: working.map((t, i) => ({
        id: `call_${i}_${t.name}`,
        type: "function",
        function: { name: t.name, arguments: JSON.stringify(argumentsFor(t.parameters, query)) }
      }))
    }, "tool_calls")
  }
  const summary = `(demo model) ${query}: ${toolResults.join(" | ").slice(0, 300)}`
  const final = tools.find((t) => t.name === "final_output")
  if (final !== undefined) {
    const args = argumentsFor(final.parameters, summary)
    return completion(body.model, {
      tool_calls: [{ id: "call_final", type: "function", function: { name: "final_output", arguments: JSON.stringify(args) } }]
    }, "tool_calls")
  }
  return completion(body.model, { content: summary }, "stop")
}

/** A fetch that answers like an OpenAI endpoint, after `latencyMs` (aborted by the request's signal). */
export const demoModelFetch = (latencyMs = 600): typeof globalThis.fetch =>
  (async (_input: string | URL | Request, init?: RequestInit) => {
    const body = JSON.parse(typeof init?.body === "string" ? init.body : "{}") as RequestBody
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, latencyMs * (0.5 + Math.random()))
      init?.signal?.addEventListener("abort", () => {
        clearTimeout(timer)
        reject(init.signal?.reason ?? new DOMException("aborted", "AbortError"))
      }, { once: true })
    })
    return new Response(JSON.stringify(answer(body)), { status: 200, headers: { "content-type": "application/json" } })
  }) as typeof globalThis.fetch
