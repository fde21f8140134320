/**
 * The orchestrator's start and stop: a stop() while start() is still starting wins (start resolves, with
 * nothing left running), and the same orchestrator starts again afterwards and runs tasks.
 */
import { expect, it } from "vitest"
import { defineAgent, Done } from "../../src/Agent.ts"
import { AgentWorkerConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { waitFor } from "../support/Orchestrators.ts"
import { freshKeyspace, testRedisOptions } from "../support/TestRedis.ts"

const agent = defineAgent<{ readonly n: number }>({ name: "lifecycle", turn: (ctx) => Promise.resolve(Done(ctx.payload.n)) })

it("a stop while starting wins: start resolves, and the orchestrator starts again later", async () => {
  const o = new Orchestrator({ ...testRedisOptions, namespace: freshKeyspace().namespace })
  o.registerRunner({ agent, agentWorkerConfig: new AgentWorkerConfig({ workers: 2 }) })
  const starting = o.start()
  await o.stop()
  await expect(starting).resolves.toBeUndefined()

  await o.start()
  const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "o", payload: { n: 7 } }))
  expect(await waitFor(() => o.getTaskStatus(id), (s) => s === "completed")).toBe("completed")
  await o.stop()
})
