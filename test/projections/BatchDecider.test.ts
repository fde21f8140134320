/**
 * The batch decider, rule by rule: created once; each task's end counted once (not a stranger's); the last
 * end completes an active batch with the counts; cancel turns an active batch cancelled (ends still counted,
 * no completion), is a no-op on a cancelled one and an error on a completed one.
 */
import { assert, describe, it } from "vitest"
import { type BatchCommand, type BatchState, decideBatch, evolveBatch } from "../../projections/BatchDecider.ts"
import type { BatchEvent } from "../../streams/BatchEvent.ts"

const NOW = 1_700_000_000_000
const batchId = "b1"
const fold = (...events: ReadonlyArray<BatchEvent>) =>
  events.reduce<BatchState | undefined>((s, event, i) => evolveBatch(s, { at: NOW + i, batchId, ownerId: "u", event }), undefined)
const created: BatchEvent = { _tag: "BatchCreated", agent: "a", taskIds: ["t1", "t2"] }
const finish = (taskId: string, status: "completed" | "failed" | "cancelled" | "expired" = "completed"): BatchCommand => ({
  _tag: "BatchTaskFinished",
  batchId,
  taskId,
  status,
  now: NOW
})
const cancel: BatchCommand = { _tag: "CancelBatch", batchId, now: NOW }

describe("BatchDecider", () => {
  it("creates a batch once", () => {
    const create: BatchCommand = { _tag: "CreateBatch", batchId, agent: "a", ownerId: "u", taskIds: ["t1", "t2"], now: NOW }
    assert.deepStrictEqual(decideBatch(create, undefined), { _tag: "Accepted", events: [created] })
    assert.deepStrictEqual(decideBatch(create, fold(created)), { _tag: "Rejected", rejection: { _tag: "BatchAlreadyExists" } })
    assert.deepStrictEqual(decideBatch(cancel, undefined), { _tag: "Rejected", rejection: { _tag: "BatchNotFound" } })
  })

  it("counts each task's end once; the last one completes the batch with the counts", () => {
    const one = fold(created, { _tag: "BatchTaskFinished", taskId: "t1", status: "failed", finished: 1, total: 2 })
    assert.deepStrictEqual(decideBatch(finish("t1"), one), {
      _tag: "Rejected",
      rejection: { _tag: "TaskNotCounted", taskId: "t1", reason: "alreadyCounted" }
    })
    assert.deepStrictEqual(decideBatch(finish("x"), one), {
      _tag: "Rejected",
      rejection: { _tag: "TaskNotCounted", taskId: "x", reason: "notInBatch" }
    })
    assert.deepStrictEqual(decideBatch(finish("t2"), one), {
      _tag: "Accepted",
      events: [
        { _tag: "BatchTaskFinished", taskId: "t2", status: "completed", finished: 2, total: 2 },
        { _tag: "BatchCompleted", completed: 1, failed: 1, cancelled: 0, expired: 0 }
      ]
    })
  })

  it("a cancelled batch still counts its tasks' ends but never completes; cancel twice is a no-op", () => {
    const cancelled = fold(created, { _tag: "BatchCancelled" }, { _tag: "BatchTaskFinished", taskId: "t1", status: "cancelled", finished: 1, total: 2 })
    assert.strictEqual(cancelled?.status, "cancelled")
    assert.deepStrictEqual(decideBatch(finish("t2", "cancelled"), cancelled), {
      _tag: "Accepted",
      events: [{ _tag: "BatchTaskFinished", taskId: "t2", status: "cancelled", finished: 2, total: 2 }]
    })
    assert.deepStrictEqual(decideBatch(cancel, cancelled), { _tag: "Accepted", events: [] })
  })

  it("a completed batch cannot be cancelled", () => {
    const completed = fold(created, { _tag: "BatchCompleted", completed: 2, failed: 0, cancelled: 0, expired: 0 })
    assert.deepStrictEqual(decideBatch(cancel, completed), { _tag: "Rejected", rejection: { _tag: "BatchAlreadyFinished" } })
  })
})
