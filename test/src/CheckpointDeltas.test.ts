/**
 * Checkpoints told as deltas (ADR 0018), end to end with real workers: an agent whose payload grows every turn,
 * as a conversation does, run with `checkpointDeltas` on and off. Every turn and a resumed wait start from the
 * exact payload (the claim folds the chain); the history holds deltas once they are worth it; the stored
 * history is a fraction of the whole-payload one; the audit verifies it; a task started by a worker with
 * deltas off is carried on by one with them on; and a conversation kept one level down with a text that grows
 * is stored as deltas too.
 */
import { describe, expect, it } from "vitest"
import { Continue, defineAgent, Done, Wait } from "../../src/Agent.ts"
import { Audit } from "../../src/audit/index.ts"
import { AgentWorkerConfig, MaintenanceWorkerConfig } from "../../src/Config.ts"
import { taskKeys } from "../../streams/Keys.ts"
import { orchestrators, waitFor } from "../support/Orchestrators.ts"
import { freshKeyspace, rawClient } from "../support/TestRedis.ts"

const make = orchestrators()
const TURNS = 20

interface Chat {
  readonly query: string
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
  readonly turn?: number
  readonly token?: string
}

/** Appends one ~900-byte message per turn (a model's answer); waits for a deferred result at turn 5; ends after TURNS turns. */
const chatter = (name: string, seen: Array<string>) =>
  defineAgent<Chat>({
    name,
    turn: async (ctx) => {
      // The payload must be exactly what the previous turn left: one message per turn so far.
      if (ctx.payload.messages.length !== ctx.turn) seen.push(`turn ${ctx.turn} saw ${ctx.payload.messages.length} messages`)
      const content = `turn ${ctx.turn}: ${"the quick brown fox jumps over the lazy dog ".repeat(20)}`
      const next = { ...ctx.payload, messages: [...ctx.payload.messages, { role: "assistant", content }], turn: ctx.turn }
      if (ctx.turn === 5) return Wait({ payload: { ...next, token: "t5" }, pending: [{ id: "approval", token: "t5" }] })
      const result = ctx.results[0]
      if (ctx.turn === 6 && !(result !== undefined && "result" in result && result.result === "yes")) seen.push(`turn 6 got ${JSON.stringify(ctx.results)}`)
      return ctx.turn + 1 >= TURNS ? Done(next.messages.length, next) : Continue(next)
    }
  })

const config = (checkpointDeltas: boolean) =>
  new AgentWorkerConfig({ workers: 2, heartbeatInterval: 0.2, backoffBase: 0.05, backoffMax: 0.2, checkpointDeltas })

describe("checkpoints as deltas", () => {
  it("a growing payload is stored as what each turn appended, read back exactly, at a fraction of the size", async () => {
    const { namespace, partitions } = freshKeyspace()
    const seen: Array<string> = []
    const withDeltas = chatter("delta-chat", seen)
    const whole = chatter("whole-chat", seen)
    const o = make(namespace)
      .registerRunner({ agent: withDeltas, agentWorkerConfig: config(true), maintenanceWorkerConfig: new MaintenanceWorkerConfig({ interval: 0.2 }) })
      .registerRunner({ agent: whole, agentWorkerConfig: config(false) })
    await o.start()
    const payload = { query: "hello", messages: [] }
    const a = await o.enqueueTask(withDeltas, withDeltas.createTask({ ownerId: "u", payload }))
    const b = await o.enqueueTask(whole, whole.createTask({ ownerId: "u", payload }))
    for (const id of [a, b]) {
      await waitFor(() => o.getTaskData(id), (d) => d?.status === "waiting")
      await o.completeDeferredTool(id, "approval", "yes", { token: "t5" })
    }
    const [da, db] = await Promise.all([a, b].map((id) => waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")))
    expect(seen).toEqual([])
    expect(da?.output).toBe(TURNS)
    expect(da?.payload).toEqual(db?.payload)

    // Checkpoints: whole while a turn's message is not under half the payload (turns 1 and 2), deltas after (the
    // chain of a conversation that only grows stays under twice its payload). All whole with deltas off.
    const checkpoints = (history: Awaited<ReturnType<typeof o.getTaskHistory>>) =>
      history.flatMap((e) => {
        const ev = e.event as { _tag: string; turn?: number; payload?: unknown; payloadDelta?: unknown }
        if (!["TurnCompleted", "TaskWaiting", "TaskCompleted"].includes(ev._tag)) return []
        return [`${ev.turn ?? "end"}:${ev.payloadDelta !== undefined ? "delta" : "whole"}`]
      })
    const expected = Array.from({ length: TURNS - 1 }, (_, i) => `${i + 1}:${i + 1 <= 2 ? "whole" : "delta"}`)
    expect(checkpoints(await o.getTaskHistory(a))).toEqual([...expected, "end:delta"])
    expect(checkpoints(await o.getTaskHistory(b))).toEqual([...expected.map((c) => c.replace("delta", "whole")), "end:whole"])

    // The stored histories' bytes: what each turn appended against every conversation so far.
    const conn = rawClient()
    try {
      const bytes = async (id: string) => {
        const entries = await conn.lrange(taskKeys({ namespace, partitions }, id).log, 0, -1)
        return entries.reduce((n, e) => n + Buffer.byteLength(e), 0)
      }
      const [deltaBytes, wholeBytes] = [await bytes(a), await bytes(b)]
      expect(deltaBytes * 4).toBeLessThan(wholeBytes)
    } finally {
      conn.disconnect()
    }
    const audit = new Audit(o)
    expect(await audit.verifyTask(a)).toMatchObject({ ok: true, divergences: [] })
    const replay = await audit.replayTask(a)
    expect(replay.steps.at(-1)?.state.payload).toEqual(da?.payload)
  })

  it("a task checkpointed whole so far is carried on as deltas by a worker that has them on", async () => {
    const { namespace } = freshKeyspace()
    const seen: Array<string> = []
    const agent = chatter("mixed-chat", seen)
    const before = make(namespace).registerRunner({ agent, agentWorkerConfig: config(false) })
    await before.start()
    const id = await before.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { query: "q", messages: [] } }))
    await waitFor(() => before.getTaskData(id), (d) => d?.status === "waiting")
    await before.stop()
    const after = make(namespace).registerRunner({ agent, agentWorkerConfig: config(true) })
    await after.start()
    await after.completeDeferredTool(id, "approval", "yes", { token: "t5" })
    const done = await waitFor(() => after.getTaskData(id), (d) => d?.status === "completed")
    expect(seen).toEqual([])
    expect(done?.output).toBe(TURNS)
    const history = await after.getTaskHistory(id)
    const kinds = history.filter((e) => e.event._tag === "TurnCompleted").map((e) => "payloadDelta" in e.event ? "delta" : "whole")
    expect(kinds.slice(0, 4)).toEqual(["whole", "whole", "whole", "whole"])
    expect(kinds.slice(5)).toContain("delta")
    expect(await new Audit(after).verifyTask(id)).toMatchObject({ ok: true })
  })

  it("a conversation kept one level down, and a text that grows, are stored as what each turn added", async () => {
    const { namespace } = freshKeyspace()
    const seen: Array<string> = []
    interface Nested {
      readonly state: { readonly messages: ReadonlyArray<string>; readonly step: number }
      readonly transcript: string
    }
    const line = (turn: number) => `turn ${turn}: ${"a model's long answer, word after word ".repeat(20)}\n`
    const agent = defineAgent<Nested>({
      name: "nested-chat",
      turn: async (ctx) => {
        const { state, transcript } = ctx.payload
        if (state.messages.length !== ctx.turn || state.step !== ctx.turn) seen.push(`turn ${ctx.turn} saw ${state.messages.length} messages, step ${state.step}`)
        if (transcript !== Array.from({ length: ctx.turn }, (_, i) => line(i)).join("")) seen.push(`turn ${ctx.turn}: transcript differs`)
        const next = { state: { messages: [...state.messages, line(ctx.turn)], step: ctx.turn + 1 }, transcript: transcript + line(ctx.turn) }
        return ctx.turn + 1 >= 12 ? Done(next.state.step, next) : Continue(next)
      }
    })
    const o = make(namespace).registerRunner({ agent, agentWorkerConfig: config(true) })
    await o.start()
    const id = await o.enqueueTask(agent, agent.createTask({ ownerId: "u", payload: { state: { messages: [], step: 0 }, transcript: "" } }))
    const done = await waitFor(() => o.getTaskData(id), (d) => d?.status === "completed")
    expect(seen).toEqual([])
    expect(done?.output).toBe(12)
    const deltas = (await o.getTaskHistory(id)).flatMap((e) => {
      const delta = (e.event as { payloadDelta?: { patch?: Record<string, unknown>; append?: Record<string, unknown> } }).payloadDelta
      return delta === undefined ? [] : [delta]
    })
    // From the third turn on, each checkpoint patches the nested conversation and appends to the text.
    expect(deltas.length).toBe(10)
    for (const d of deltas) {
      expect(Object.keys(d.patch ?? {})).toEqual(["state"])
      expect(typeof d.append?.transcript).toBe("string")
    }
    const audit = new Audit(o)
    expect(await audit.verifyTask(id)).toMatchObject({ ok: true, divergences: [] })
    expect((await audit.replayTask(id)).steps.at(-1)?.state.payload).toEqual(done?.payload)
  })
})
