/**
 * The example of docs/agents.md, compiled and run: an agent with tools and a structured output, its
 * own context type, run turn by turn against a scripted model (no network, no API key).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { FatalAgentError } from "../../src/AgentErrors.ts"
import { Agent, agentContextFields, conversationFromPayload, tool } from "../../src/agent/index.ts"
import { reply, scriptedFetch } from "../support/FakeModelServer.ts"
import { runToCompletion } from "../support/TurnDriver.ts"

// --- docs/agents.md: defining an agent -------------------------------------------------------------
const TripContext = Schema.Struct({
  ...agentContextFields,
  customerId: Schema.String,
  budget: Schema.Finite
})
type TripContext = typeof TripContext.Type

const Itinerary = Schema.Struct({
  destination: Schema.String,
  nights: Schema.Int.check(Schema.isGreaterThan(0)),
  totalPrice: Schema.Finite,
  notes: Schema.optional(Schema.String)
})

const searchHotels = tool({
  name: "search_hotels",
  description: "Hotels in a city with their price per night",
  parameters: Schema.Struct({
    city: Schema.String,
    maxPricePerNight: Schema.optional(Schema.Finite)
  }),
  execute: async ({ city, maxPricePerNight }) =>
    [{ name: `${city} Central`, pricePerNight: 120 }, { name: `${city} Budget Inn`, pricePerNight: 60 }]
      .filter((h) => maxPricePerNight === undefined || h.pricePerNight <= maxPricePerNight)
})

const book = tool<{ hotel: string; nights: number }, TripContext>({
  name: "book_hotel",
  parameters: Schema.Struct({ hotel: Schema.String, nights: Schema.Int }),
  execute: ({ hotel, nights }, ctx) => {
    if (ctx.context.customerId === "blocked") {
      throw new FatalAgentError({ message: "customer may not book" }) // fails the task, no retry
    }
    ctx.emit("booking", { hotel, nights }) // a live event
    return `booked ${hotel} for ${nights} nights (ref ${ctx.taskId}-${ctx.toolCallId})`
  }
})

const makeTravelAgent = (client: { baseURL: string; apiKey: string; fetch?: typeof fetch }) =>
  new Agent({
    name: "travel-agent",
    description: "Plans and books short trips",
    contextSchema: TripContext,
    instructions: (c) => `You plan trips. The budget is ${c.budget} EUR in total.`,
    model: "gpt-4.1-mini",
    fallbackModels: ["gpt-4.1"],
    modelSettings: { temperature: 0.2, parallelToolCalls: true },
    tools: [searchHotels, book],
    outputType: Itinerary,
    maxTurns: 6,
    hooks: {
      onRunEnd: (c, _turn, end) => Effect.logInfo(`trip for ${c.customerId}`, end.output ?? end.error)
    },
    client
  })
// --- end of the docs/agents.md example --------------------------------------------------------------

describe("the docs example", () => {
  it.live("plans and books a trip against a scripted model", () =>
    Effect.gen(function*() {
      const model = scriptedFetch([
        reply.toolCalls([{ name: "search_hotels", arguments: { city: "Lisbon", maxPricePerNight: 100 } }]),
        reply.toolCalls([{ name: "book_hotel", arguments: { hotel: "Lisbon Budget Inn", nights: 3 } }]),
        reply.finalOutput({ destination: "Lisbon", nights: 3, totalPrice: 180, notes: null })
      ])
      const agent = makeTravelAgent({ baseURL: "http://scripted.invalid/v1", apiKey: "none", fetch: model.fetch })
      const task = agent.createTask({
        ownerId: "user-42",
        payload: { query: "Three nights in Lisbon, cheap please.", customerId: "c-7", budget: 400 }
      })
      const run = yield* runToCompletion(agent, task.payload)
      assert.deepStrictEqual(run.output, { destination: "Lisbon", nights: 3, totalPrice: 180 })
      assert.deepStrictEqual(run.events.filter((e) => e.type === "booking").map((e) => e.data), [
        { hotel: "Lisbon Budget Inn", nights: 3 }
      ])
      const conversation = conversationFromPayload(run.payloads.at(-1)!)
      assert.deepStrictEqual(conversation.turns.map((t) => t.toolCalls.map((c) => c.name)), [
        ["search_hotels"],
        ["book_hotel"],
        ["final_output"]
      ])
      assert.match(conversation.turns[1]!.toolCalls[0]!.result!, /^booked Lisbon Budget Inn for 3 nights/)
      assert.strictEqual(model.requests[0]!.body.messages[0].content.split("\n\n")[0], "You plan trips. The budget is 400 EUR in total.")
    }))
})
