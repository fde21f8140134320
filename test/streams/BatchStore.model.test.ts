/**
 * Model-based proof that the batch scripts and the batch decider agree: random sequences of batch creations,
 * task ends (of tasks in the batch or not, once or twice) and cancels run against the pure model
 * (`decideBatch` + `evolveBatch`) and Redis (`TaskStore.executeBatch`). After every step: the same outcome,
 * the same new events in the batch's log, the same state, and the state equal to the fold of the stored log.
 * A batch of thousands of tasks, whose ids the script writes in several calls, keeps every id at its position.
 *
 * Size: MODEL_RUNS (env); MODEL_SEED to replay.
 */
import fc from "fast-check"
import { Effect, ManagedRuntime } from "effect"
import { afterAll, assert, describe, it } from "vitest"
import {
  type BatchCommand,
  type BatchRejection,
  type BatchState,
  decideBatch,
  evolveBatch
} from "../../projections/BatchDecider.ts"
import type { BatchEnvelope, BatchTaskEnd } from "../../streams/BatchEvent.ts"
import { batchKeys } from "../../streams/Keys.ts"
import { TaskStore } from "../../src/TaskStore.ts"
import { freshKeyspace, storeLayer } from "../support/TestRedis.ts"

const RUNS = Number(process.env.MODEL_RUNS ?? 60)
const SEED = process.env.MODEL_SEED === undefined ? {} : { seed: Number(process.env.MODEL_SEED) }
const T0 = 1_700_000_000_000

type Step =
  | { readonly op: "Create"; readonly batch: number; readonly tasks: ReadonlyArray<number>; readonly owner: string }
  /** A task's end: `member` picks one of the batch's tasks (by index), else any task id. */
  | { readonly op: "Finished"; readonly batch: number; readonly member: boolean; readonly n: number; readonly status: BatchTaskEnd }
  | { readonly op: "Cancel"; readonly batch: number }

const batch = fc.nat(1)
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant("Create" as const), batch, tasks: fc.uniqueArray(fc.nat(5), { minLength: 1, maxLength: 4 }), owner: fc.constantFrom("u1", "o/ü\"x") }) },
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant("Finished" as const),
      batch,
      member: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      n: fc.nat(5),
      status: fc.constantFrom("completed" as const, "failed" as const, "cancelled" as const, "expired" as const)
    })
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("Cancel" as const), batch }) }
)

const batchIdOf = (n: number) => `batch-${n}`

/** Both batches created first (most of the time), then up to 40 steps. */
const planArb = fc
  .tuple(
    fc.array(fc.record({ dt: fc.nat(50), step: stepArb.filter((s) => s.op === "Create") }), { minLength: 1, maxLength: 2 }),
    fc.array(fc.record({ dt: fc.nat(50), step: stepArb }), { maxLength: 40, size: "max" })
  )
  .map(([creates, steps]) => [...creates, ...steps])

const toCommand = (step: Step, state: BatchState | undefined, now: number): BatchCommand => {
  const batchId = batchIdOf(step.batch)
  switch (step.op) {
    case "Create":
      return { _tag: "CreateBatch", batchId, agent: "alpha", ownerId: step.owner, taskIds: step.tasks.map((t) => `t-${t}`), now }
    case "Finished": {
      const ids = state?.taskIds ?? []
      const taskId = step.member && ids.length > 0 ? ids[step.n % ids.length]! : `t-${step.n}`
      return { _tag: "BatchTaskFinished", batchId, taskId, status: step.status, now }
    }
    case "Cancel":
      return { _tag: "CancelBatch", batchId, now }
  }
}

const rejectionOf = (e: { _tag: string; reason?: string; taskId?: string }): BatchRejection =>
  e._tag === "TaskNotCounted"
    ? { _tag: "TaskNotCounted", taskId: e.taskId!, reason: e.reason as "notInBatch" | "alreadyCounted" }
    : { _tag: e._tag as "BatchNotFound" }

const stats = { runs: 0, steps: 0, accepted: new Map<string, number>(), rejected: new Map<string, number>() }
const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1)
afterAll(() => {
  const fmt = (m: Map<string, number>) => [...m].sort().map(([k, v]) => `${k} ${v}`).join(", ")
  console.log(`BatchStore model: ${stats.runs} runs, ${stats.steps} steps\n  accepted: ${fmt(stats.accepted)}\n  rejected: ${fmt(stats.rejected)}`)
})

describe("batch scripts against the batch decider", () => {
  it("random creations, task ends and cancels: same outcome, events, state and fold", async () => {
    await fc.assert(
      fc.asyncProperty(planArb, async (plan) => {
        const ks = freshKeyspace(2)
        const runtime = ManagedRuntime.make(storeLayer(ks))
        try {
          const store = await runtime.runPromise(Effect.gen(function*() {
            return yield* TaskStore
          }))
          const model = new Map<string, BatchState>()
          let now = T0
          for (const { dt, step } of plan) {
            now += dt
            const batchId = batchIdOf(step.batch)
            const before = model.get(batchId)
            const command = toCommand(step, before, now)
            const decision = decideBatch(command, before)
            const got = await runtime.runPromise(Effect.result(store.executeBatch(command)))
            stats.steps++
            if (decision._tag === "Rejected") {
              assert.strictEqual(got._tag, "Failure", `${command._tag} must be rejected`)
              if (got._tag === "Failure") assert.deepStrictEqual(rejectionOf(got.failure as never), decision.rejection)
              count(stats.rejected, decision.rejection._tag)
            } else {
              assert.strictEqual(got._tag, "Success", `${command._tag} must be accepted: ${got._tag === "Failure" ? got.failure.message : ""}`)
              let state = before
              const want: Array<Omit<BatchEnvelope, "version">> = []
              for (const event of decision.events) {
                const envelope = { at: now, batchId, ownerId: before?.ownerId ?? (command._tag === "CreateBatch" ? command.ownerId : ""), event }
                state = evolveBatch(state, envelope)
                want.push(envelope)
                count(stats.accepted, event._tag)
              }
              if (state !== undefined) model.set(batchId, state)
              const history = await runtime.runPromise(store.getBatchHistory(batchId))
              assert.deepStrictEqual(
                history.slice(before?.version ?? 0).map(({ version: _v, ...rest }) => rest),
                want,
                "new events in the batch's log"
              )
            }
            const stored = await runtime.runPromise(store.getBatchState(batchId))
            assert.deepStrictEqual(stored, model.get(batchId), `state of ${batchId}`)
            const history = await runtime.runPromise(store.getBatchHistory(batchId))
            assert.deepStrictEqual(history.reduce<BatchState | undefined>(evolveBatch, undefined), model.get(batchId), "fold of the log")
            assert.deepStrictEqual(history.map((e) => e.version), history.map((_, i) => i + 1), "versions")
          }
          stats.runs++
        } finally {
          await runtime.runPromise(Effect.gen(function*() {
            const store = yield* TaskStore
            for (const n of [0, 1]) {
              const k = batchKeys(ks, batchIdOf(n))
              yield* Effect.promise(() => store.conn.del(k.batch, k.log, k.tasks, k.ended))
            }
          }))
          await runtime.dispose()
        }
      }),
      { numRuns: RUNS * 2, ...SEED }
    )
    for (const tag of ["BatchCreated", "BatchTaskFinished", "BatchCompleted", "BatchCancelled"]) {
      assert.isAbove(stats.accepted.get(tag) ?? 0, 0, tag)
    }
    for (const tag of ["BatchNotFound", "BatchAlreadyExists", "BatchAlreadyFinished", "TaskNotCounted"]) {
      assert.isAbove(stats.rejected.get(tag) ?? 0, 0, tag)
    }
  }, 60_000)

  it("a batch of 2,345 tasks keeps every id at its position (its ids are written 1,000 to a call)", async () => {
    const ks = freshKeyspace(1)
    const runtime = ManagedRuntime.make(storeLayer(ks))
    try {
      const store = await runtime.runPromise(Effect.gen(function*() {
        return yield* TaskStore
      }))
      const taskIds = Array.from({ length: 2_345 }, (_, i) => `t-${(i * 7919) % 2_345}`)
      const create: BatchCommand = { _tag: "CreateBatch", batchId: "big", agent: "alpha", ownerId: "o", taskIds, now: T0 }
      await runtime.runPromise(store.executeBatch(create))
      const model = evolveBatch(undefined, { at: T0, batchId: "big", ownerId: "o", event: { _tag: "BatchCreated", agent: "alpha", taskIds } })
      assert.deepStrictEqual(await runtime.runPromise(store.getBatchState("big")), model)
      // The ids on both sides of each call's boundary count as the batch's own.
      for (const i of [0, 999, 1_000, 1_999, 2_000, 2_344]) {
        const end: BatchCommand = { _tag: "BatchTaskFinished", batchId: "big", taskId: taskIds[i]!, status: "completed", now: T0 + i }
        const got = await runtime.runPromise(Effect.result(store.executeBatch(end)))
        assert.strictEqual(got._tag, "Success", `task at position ${i}`)
      }
      const state = await runtime.runPromise(store.getBatchState("big"))
      assert.strictEqual(Object.keys(state?.ended ?? {}).length, 6)
    } finally {
      await runtime.dispose()
    }
  })
})
