/**
 * Orchestrator options that reach past the client: the API keys an orchestrator is given are the ones its LLM
 * agents send (unless an agent names its own), and `redisMaxConnections` refuses a start that would need more
 * connections than it allows. (The Python factorial took both options and used neither.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { defineAgent, Done } from "../../src/Agent.ts"
import { Agent } from "../../src/agent/index.ts"
import { AgentWorkerConfig } from "../../src/Config.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { type FakeModelServer, reply, startFakeModelServer } from "../support/FakeModelServer.ts"
import { freshKeyspace, testRedisOptions } from "../support/TestRedis.ts"

let model: FakeModelServer
beforeAll(async () => {
  model = await startFakeModelServer(() => reply.text("done"))
})
afterAll(() => model.close())

const waitForEnd = async (o: Orchestrator, id: string) => {
  const end = Date.now() + 15_000
  for (;;) {
    const data = await o.getTaskData(id)
    if (data?.status === "completed" || data?.status === "failed") return data
    if (Date.now() > end) throw new Error(`task ${id} did not end: ${JSON.stringify(data)}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

describe("API keys", () => {
  it("an LLM agent without a key of its own sends the orchestrator's; one with a key sends its own", async () => {
    const orchestrator = new Orchestrator({ ...testRedisOptions, ...freshKeyspace(), openaiApiKey: "sk-orchestrator" })
    const keyless = new Agent({ name: "keyless", model: "m", client: { baseURL: model.baseURL } })
    const ownKey = new Agent({ name: "own-key", model: "m", client: { baseURL: model.baseURL, apiKey: "sk-agent" } })
    orchestrator.registerRunner({ agent: keyless, agentWorkerConfig: new AgentWorkerConfig({ workers: 1 }) })
    orchestrator.registerRunner({ agent: ownKey, agentWorkerConfig: new AgentWorkerConfig({ workers: 1 }) })
    try {
      await orchestrator.start()
      for (const agent of [keyless, ownKey]) {
        const id = await orchestrator.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "hi" } }))
        expect((await waitForEnd(orchestrator, id)).status).toBe("completed")
      }
      expect(model.requests.map((r) => r.headers.authorization)).toEqual(["Bearer sk-orchestrator", "Bearer sk-agent"])
    } finally {
      await orchestrator.stop()
    }
  })
})

describe("redisMaxConnections", () => {
  const noop = (name: string) => defineAgent({ name, turn: () => Promise.resolve(Done(null)) })

  it("refuses a start that needs more connections, and starts within the bound", async () => {
    // 2 agents on 3 partitions: 2 + 2·3 readers + 3 for the metrics projector = 11.
    const keyspace = freshKeyspace()
    const tight = new Orchestrator({ ...testRedisOptions, ...keyspace, partitions: 3, redisMaxConnections: 10 })
    tight.registerRunner({ agent: noop("a") }).registerRunner({ agent: noop("b") })
    await expect(tight.start()).rejects.toMatchObject({
      _tag: "InvalidConfig",
      message: expect.stringMatching(/need up to 11 Redis connections.*redisMaxConnections \(10\)/)
    })
    await tight.stop()

    const enough = new Orchestrator({ ...testRedisOptions, ...keyspace, partitions: 3, redisMaxConnections: 11 })
    enough.registerRunner({ agent: noop("a") }).registerRunner({ agent: noop("b") })
    try {
      await enough.start()
    } finally {
      await enough.stop()
    }
  })

  it("is an integer of at least 2", () => {
    expect(() => new Orchestrator({ ...testRedisOptions, redisMaxConnections: 1 })).toThrow(/redisMaxConnections must be an integer of at least 2/)
    expect(() => new Orchestrator({ ...testRedisOptions, redisMaxConnections: 2.5 })).toThrow(/redisMaxConnections/)
  })
})
