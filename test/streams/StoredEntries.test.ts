/**
 * Stored entries (history and partition-log JSON) decode through `jsonEntryDecoder`: text that is not JSON
 * and JSON that is not an event are each a `CorruptEntry` naming the entry, never a thrown error or a
 * silently accepted value.
 */
import { describe, expect, it } from "vitest"
import { Result } from "effect"
import { decodeLogFacts } from "../../streams/TaskEvent.ts"

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
