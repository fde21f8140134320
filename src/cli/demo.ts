/**
 * The demo: a Redis-backed orchestrator with a demo agent, a few tasks enqueued, and their progress
 * printed as they run (and cancelled/steered to show those paths), and the dashboard at
 * http://127.0.0.1:8080/observability (port: env DASHBOARD_PORT). Needs no API key.
 * Run: `npm start` (or `node src/cli/main.ts demo`). Stops on Ctrl-C.
 */
import { Continue, defineAgent, Done } from "../Agent.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig, ObservabilityConfig } from "../Config.ts"
import { Orchestrator } from "../Orchestrator.ts"
import { findOrStartRedis } from "./LocalRedis.ts"

interface ResearchPayload {
  readonly query: string
  readonly notes: ReadonlyArray<string>
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms)
    signal.addEventListener("abort", () => {
      clearTimeout(t)
      reject(new Error("interrupted"))
    })
  })

/** A three-turn "research" agent: each turn takes a note (steering messages become notes too). */
export const researcher = defineAgent<ResearchPayload>({
  name: "researcher",
  description: "Takes notes on a query over three turns, then summarises them.",
  turn: async (ctx) => {
    await sleep(400 + Math.random() * 600, ctx.signal)
    const steered = ctx.steering.map((m) => `steered: ${JSON.stringify(m)}`)
    const notes = [...ctx.payload.notes, ...steered, `turn ${ctx.turn + 1}: looked into "${ctx.payload.query}"`]
    return ctx.turn >= 2
      ? Done({ summary: `${notes.length} notes on "${ctx.payload.query}"`, notes })
      : Continue({ ...ctx.payload, notes })
  }
})

export const runDemo = async (): Promise<void> => {
  const redis = await findOrStartRedis()
  console.log(`demo: Redis at ${redis.url}${redis.started ? " (private, started for the demo)" : ""}`)
  console.log("demo: no model API needed — the demo agent is a plain function agent")
  const orchestrator = new Orchestrator({
    redisUrl: redis.url,
    namespace: "demo",
    observabilityConfig: new ObservabilityConfig({ port: Number(process.env.DASHBOARD_PORT ?? 8080), dashboardName: "factorial-ts demo" })
  })
  orchestrator.registerRunner({
    agent: researcher,
    agentWorkerConfig: new AgentWorkerConfig({ workers: 4, heartbeatInterval: 1 }),
    maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: 1 })
  })
  await orchestrator.start()
  console.log(`demo: dashboard at ${orchestrator.observabilityUrl}/observability`)
  const queries = ["solar panels", "battery recycling", "heat pumps", "tidal power", "grid storage"]
  const ids = await Promise.all(
    queries.map((query) =>
      orchestrator.enqueueTask(researcher, researcher.createTask({ ownerId: "demo-user", payload: { query, notes: [] } }))
    )
  )
  console.log(`demo: enqueued ${ids.length} tasks`)
  setTimeout(() => void orchestrator.steerTask(ids[0]!, [{ role: "user", content: "focus on costs" }]).catch(() => {}), 300)
  setTimeout(() => void orchestrator.cancelTask(ids[4]!).catch(() => {}), 700)

  const last = new Map<string, string>()
  const timer = setInterval(async () => {
    for (const id of ids) {
      const data = await orchestrator.getTaskData(id).catch(() => null)
      const line = data === null ? "gone" : `${data.status} (turns ${data.turns})`
      if (last.get(id) !== line) {
        last.set(id, line)
        console.log(`  ${id.slice(0, 8)}  ${line}${data?.output ? `  → ${JSON.stringify(data.output).slice(0, 80)}` : ""}`)
      }
    }
  }, 250)
  const stop = async () => {
    clearInterval(timer)
    await orchestrator.stop()
    redis.stop()
  }
  process.once("SIGINT", () => void stop().then(() => process.exit(0)))
  process.once("SIGTERM", () => void stop().then(() => process.exit(0)))
  console.log("demo: running (Ctrl-C to stop)")
}

if (import.meta.main) await runDemo()
