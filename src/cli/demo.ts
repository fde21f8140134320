/**
 * The demo: a Redis-backed orchestrator running an LLM research agent with two tools, the dashboard and
 * control API, and a few tasks whose progress is printed as they run (one is steered, one cancelled).
 * Without OPENAI_API_KEY the agent talks to the built-in demo model (no network) and says so; with it,
 * to the real model (DEMO_MODEL, default gpt-4.1-mini). Run: `npm start`. Stops on Ctrl-C.
 */
import { Schema } from "effect"
import { Agent, tool } from "../agent/index.ts"
import { demoModelFetch } from "../agent/DemoModel.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig, ObservabilityConfig } from "../Config.ts"
import { Orchestrator } from "../Orchestrator.ts"
import { findOrStartRedis } from "./LocalRedis.ts"

const useRealModel = process.env.OPENAI_API_KEY !== undefined && process.env.OPENAI_API_KEY !== ""
const modelName = useRealModel ? (process.env.DEMO_MODEL ?? "gpt-4.1-mini") : "demo-model"

const searchNotes = tool({
  name: "search_notes",
  description: "Searches the team's research notes for a topic",
  parameters: Schema.Struct({ topic: Schema.String }),
  execute: async ({ topic }) => [
    `${topic}: costs fell by about a third over five years`,
    `${topic}: adoption is limited by grid connection queues`
  ]
})

const estimate = tool({
  name: "estimate_payback_years",
  description: "Estimates a payback period in years from a cost and a yearly saving",
  parameters: Schema.Struct({ cost: Schema.Finite, yearlySaving: Schema.Finite }),
  execute: async ({ cost, yearlySaving }) => (yearlySaving > 0 ? Math.round((cost / yearlySaving) * 10) / 10 : null)
})

export const researcher = new Agent({
  name: "researcher",
  description: "Researches a topic with its tools and returns a short brief",
  instructions: "You research energy topics. Use the tools, then give a two-sentence brief.",
  model: modelName,
  tools: [searchNotes, estimate],
  outputType: Schema.Struct({ brief: Schema.String }),
  maxTurns: 4,
  client: useRealModel ? {} : { apiKey: "demo", baseURL: "http://demo-model.invalid/v1", fetch: demoModelFetch() }
})

const listen = async (orchestrator: Orchestrator): Promise<string | undefined> => {
  try {
    return await orchestrator.startServer()
  } catch {
    return undefined // port taken: the demo runs without the dashboard
  }
}

export interface DemoOptions {
  readonly args?: ReadonlyArray<string>
  /** The Redis chosen on the command line; without it the demo finds or starts one (`findOrStartRedis`). */
  readonly redis?:
    | { readonly redisUrl: string; readonly label: string }
    | { readonly clusterNodes: ReadonlyArray<{ readonly host: string; readonly port: number }>; readonly label: string }
}

/** Runs until SIGINT/SIGTERM, then stops gracefully; resolves with the exit code. */
export const runDemo = async (options: DemoOptions = {}): Promise<number> => {
  const chosen = options.redis
  const redis = chosen !== undefined
    ? { url: chosen.label, stop: () => {}, started: false }
    : await findOrStartRedis()
  console.log(`demo: Redis at ${redis.url}${redis.started ? " (private, started for the demo)" : ""}`)
  console.log(
    useRealModel
      ? `demo: using the real model ${modelName} (OPENAI_API_KEY is set)`
      : "demo: no OPENAI_API_KEY — using the built-in scripted demo model (no network)"
  )
  const orchestrator = new Orchestrator({
    ...(chosen !== undefined && "clusterNodes" in chosen ? { clusterNodes: chosen.clusterNodes } : {
      redisUrl: chosen?.redisUrl ?? redis.url
    }),
    namespace: process.env.DEMO_NAMESPACE ?? "demo",
    observabilityConfig: new ObservabilityConfig({
      port: Number(process.env.PORT ?? 8080),
      dashboardName: "factorial-ts demo"
    })
  })
  orchestrator.registerRunner({
    agent: researcher,
    // The demo's conversations grow every turn: their checkpoints are stored as what each turn appended (ADR 0018).
    agentWorkerConfig: new AgentWorkerConfig({ workers: 4, heartbeatInterval: 1 }),
    maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: 1 })
  })
  await orchestrator.start()
  const url = await listen(orchestrator)
  console.log(url === undefined ? "demo: dashboard port taken; running without it" : `demo: dashboard at ${url}/observability`)

  const topics = ["rooftop solar", "battery recycling", "heat pumps", "tidal power", "grid storage"]
  const ids = await Promise.all(
    topics.map((query) =>
      orchestrator.enqueueTask(researcher, researcher.createTask({ ownerId: "demo-user", payload: { query } }))
    )
  )
  console.log(`demo: enqueued ${ids.length} tasks`)
  setTimeout(() => void orchestrator.steerTask(ids[0]!, [{ role: "user", content: "Focus on costs." }]).catch(() => {}), 200)
  setTimeout(() => void orchestrator.cancelTask(ids[4]!).catch(() => {}), 500)

  const last = new Map<string, string>()
  const timer = setInterval(async () => {
    for (const id of ids) {
      const data = await orchestrator.getTaskData(id).catch(() => null)
      const line = data === null ? "gone" : `${data.status} (turns ${data.turns})`
      if (last.get(id) !== line) {
        last.set(id, line)
        const output = data?.output === undefined ? "" : `  → ${JSON.stringify(data.output).slice(0, 100)}`
        console.log(`  ${id.slice(0, 8)}  ${line}${output}`)
      }
    }
  }, 250)
  console.log("demo: running (Ctrl-C to stop)")
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve)
    process.once("SIGTERM", resolve)
  })
  clearInterval(timer)
  await orchestrator.stop()
  redis.stop()
  console.log("demo: stopped")
  return 0
}

if (import.meta.main) process.exit(await runDemo())
