/**
 * Stored entries (history and partition-log JSON) decode through `jsonEntryDecoder`: text that is not JSON
 * and JSON that is not an event are each a `CorruptEntry` naming the entry, never a thrown error or a
 * silently accepted value. A history entry past the first is named by the history's first entry (ADR 0026).
 */
import { describe, expect, it } from "vitest"
import { Effect, Result } from "effect"
import { decodeHistory, decodeLogFacts, namedHistoryEntry } from "../../streams/TaskEvent.ts"

const entry = JSON.stringify({
  version: 2,
  at: 1795507740000,
  taskId: "t-1",
  agent: "noop",
  ownerId: "o",
  event: { _tag: "TaskClaimed", lease: 1, worker: "w" }
})

describe("stored entries", () => {
  it("decode an event's facts", () => {
    const r = decodeLogFacts(entry)
    expect(Result.isSuccess(r) && r.success).toEqual({ at: 1795507740000, taskId: "t-1", agent: "noop", event: { _tag: "TaskClaimed", lease: 1 } })
  })

  it("report text that is not JSON as a corrupt entry", () => {
    const r = decodeLogFacts(entry.slice(0, 40))
    expect(Result.isFailure(r) && r.failure._tag).toBe("CorruptEntry")
    expect(Result.isFailure(r) && r.failure.message).toMatch(/^not JSON/)
    expect(Result.isFailure(r) && r.failure.entry).toBe(entry.slice(0, 40))
  })

  it("report JSON that is not an event as a corrupt entry", () => {
    const r = decodeLogFacts(JSON.stringify({ at: "yesterday", taskId: "t-1", agent: "noop", event: { _tag: "Nope" } }))
    expect(Result.isFailure(r) && r.failure._tag).toBe("CorruptEntry")
    expect(Result.isFailure(r) && r.failure.message).not.toMatch(/^not JSON/)
  })
})

describe("history entries (ADR 0026)", () => {
  const first = JSON.stringify({ id: "1-0", version: 1, at: 1, taskId: "t-1", agent: "noop", ownerId: 'o "quoted"', event: { _tag: "TaskEnqueued", payload: { n: 1 }, maxRetries: 2 } })
  const claimed = `{"id":"2-0","version":2,"at":2,"event":{"_tag":"TaskClaimed","lease":1,"worker":"w"}}`
  const owner = { taskId: "t-1", agent: "noop", ownerId: 'o "quoted"' }

  it("name an entry past the first with the history's owner, and leave a whole entry as it is", () => {
    expect(JSON.parse(namedHistoryEntry(claimed, owner))).toEqual({ ...JSON.parse(claimed), ...owner })
    expect(namedHistoryEntry(first, { taskId: "other", agent: "x", ownerId: "y" })).toBe(first)
  })

  it("decode a history from its first entry, or report one whose first entry names nobody", async () => {
    const decoded = await Effect.runPromise(decodeHistory([first, claimed]))
    expect(decoded.map((e) => [e.version, e.taskId, e.agent, e.ownerId])).toEqual([[1, "t-1", "noop", 'o "quoted"'], [2, "t-1", "noop", 'o "quoted"']])
    const unnamed = await Effect.runPromise(Effect.flip(decodeHistory([claimed])))
    expect(unnamed._tag).toBe("CorruptEntry")
    const page = await Effect.runPromise(decodeHistory([claimed], owner))
    expect(page[0]?.ownerId).toBe('o "quoted"')
  })
})
