/**
 * The audit tools against a real Redis: replay reconstructs every state the scripts wrote, verify finds
 * a corrupted projection field by field and rebuild repairs it, and export → import into a fresh
 * namespace → replay gives the same states (the imported namespace verifies clean).
 */
import { afterAll, describe, expect, it } from "vitest"
import { Stream } from "effect"
import { taskKeys } from "../../streams/Keys.ts"
import {
  countIndexed,
  exportHistories,
  exportRecords,
  importHistories,
  rebuildProjections,
  replayTask,
  verifyAll,
  verifyTask
} from "../../src/audit/index.ts"
import { freshKeyspace, testPartitions } from "../support/TestRedis.ts"
import { collectText, exec, liveState, redisDo, runtimeFor, seed, type Runtime } from "./fixtures.ts"

const runtimes: Array<Runtime> = []
/** A fresh namespace (default: the project's partition count, 4 on the cluster project). */
const open = (partitions = testPartitions) => {
  const ks = freshKeyspace(partitions)
  const rt = runtimeFor(ks)
  runtimes.push(rt)
  return { ks, rt }
}
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.dispose()))
})

describe("replay", () => {
  it("reconstructs the state at every step, equal to the live projection at the end", async () => {
    const { rt } = open()
    const { t } = await rt.runPromise(seed("r"))
    const replay = await rt.runPromise(replayTask(t("done")))
    expect(replay.steps.map((s) => s.event._tag)).toEqual([
      "TaskEnqueued",
      "TaskClaimed",
      "TurnCompleted",
      "TaskSteered",
      "TaskClaimed",
      "TurnCompleted",
      "TaskClaimed",
      "TaskCompleted"
    ])
    expect(replay.steps.map((s) => s.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    expect(replay.steps.map((s) => s.state.status)).toEqual([
      "queued",
      "processing",
      "queued",
      "queued",
      "processing",
      "queued",
      "processing",
      "completed"
    ])
    expect(replay.steps.map((s) => s.messages?.length)).toEqual([1, 1, 2, 2, 2, 4, 4, 4])
    expect(replay.steps[3]!.state.steering).toEqual([{ role: "user", content: "shorter please" }])
    expect(replay.state).toEqual(await rt.runPromise(liveState(t("done"))))

    const at3 = await rt.runPromise(replayTask(t("done"), { upTo: 3 }))
    expect(at3.version).toBe(3)
    expect(at3.state?.turns).toBe(1)
    expect(at3.steps).toHaveLength(3)
  })

  it("fails with TaskNotFound for an unknown task and InvalidInput for a bad upTo", async () => {
    const { rt } = open()
    const exit = await rt.runPromiseExit(replayTask("nope"))
    expect(JSON.stringify(exit)).toContain("TaskNotFound")
    const bad = await rt.runPromiseExit(replayTask("nope", { upTo: 0 }))
    expect(JSON.stringify(bad)).toContain("InvalidInput")
  })
})

describe("verify", () => {
  it("finds every task consistent, then catches a corrupted status, and rebuild --fix repairs it", async () => {
    const { ks, rt } = open(4)
    const { ids, t } = await rt.runPromise(seed("v"))
    for (const id of ids) {
      const r = await rt.runPromise(verifyTask(id))
      expect(r, id).toMatchObject({ ok: true, divergences: [] })
    }
    const all = await rt.runPromise(verifyAll())
    expect(all).toMatchObject({ checked: ids.length - 1, divergent: 0 }) // the expired one has left the indexes

    const k = taskKeys(ks, t("done"))
    await rt.runPromise(redisDo((c) => c.hset(k.task, "status", "failed", "turns", "7")))
    const bad = await rt.runPromise(verifyTask(t("done")))
    expect(bad.ok).toBe(false)
    expect(bad.liveStatus).toBe("failed")
    expect(bad.expectedStatus).toBe("completed")
    expect(bad.divergences).toEqual([
      { field: "status", live: "failed", expected: "completed" },
      { field: "turns", live: 7, expected: 2 }
    ])
    const progress: Array<number> = []
    const all2 = await rt.runPromise(verifyAll({ onProgress: (p) => progress.push(p.checked) }))
    expect(all2.divergent).toBe(1)
    expect(all2.results[0]?.taskId).toBe(t("done"))
    expect(progress.at(-1)).toBe(all2.checked)

    const dry = await rt.runPromise(rebuildProjections())
    expect(dry).toMatchObject({ checked: ids.length, divergent: 1, fixed: 0 })
    const fixed = await rt.runPromise(rebuildProjections({ fix: true }))
    expect(fixed).toMatchObject({ divergent: 1, fixed: 1, raced: 0 })
    expect((await rt.runPromise(verifyTask(t("done")))).ok).toBe(true)
    expect((await rt.runPromise(verifyAll())).divergent).toBe(0)
  })

  it("reads a task as an earlier release stored it: an id in its hash, every history entry whole (ADR 0026)", async () => {
    const { ks, rt } = open()
    const { t } = await rt.runPromise(seed("e"))
    const id = t("done")
    const k = taskKeys(ks, id)
    const before = await rt.runPromise(replayTask(id))
    const raw = await rt.runPromise(redisDo((c) => c.lrange(k.log, 0, -1)))
    expect(raw.slice(1).some((e) => "taskId" in JSON.parse(e))).toBe(false)
    const { taskId, agent, ownerId } = JSON.parse(raw[0]!) as Record<string, string>
    const whole = raw.map((e) => JSON.stringify({ ...JSON.parse(e), taskId, agent, ownerId }))
    await rt.runPromise(redisDo((c) => c.multi().del(k.log).rpush(k.log, ...whole).hset(k.task, "id", id).exec()))
    expect(await rt.runPromise(replayTask(id))).toEqual(before)
    expect(await rt.runPromise(verifyTask(id))).toMatchObject({ ok: true, divergences: [] })
  })

  it("checkpoints told as deltas: the payload is their chain's, a wrong chain pointer is caught and rebuilt", async () => {
    const { ks, rt } = open(4)
    const { t } = await rt.runPromise(seed("d"))
    const k = taskKeys(ks, t("chain"))
    // Enqueue (whole) at 0, the two deltas at 2 and 4: the hash points at the range.
    expect(await rt.runPromise(redisDo((c) => c.hget(k.task, "payloadAt")))).toBe("0-4")
    const live = await rt.runPromise(liveState(t("chain")))
    expect((live?.payload as { messages: Array<unknown> }).messages).toHaveLength(4)
    const replay = await rt.runPromise(replayTask(t("chain")))
    expect(replay.steps.map((s) => (s.state.payload as { messages: Array<unknown> }).messages.length)).toEqual([1, 1, 2, 2, 4, 4])
    expect(replay.steps.at(-1)?.state).toEqual(live)
    expect(await rt.runPromise(verifyTask(t("chain")))).toMatchObject({ ok: true, divergences: [] })

    // A pointer at the last delta alone loses the chain: verify says so, rebuild --fix restores the range.
    await rt.runPromise(redisDo((c) => c.hset(k.task, "payloadAt", "4")))
    const bad = await rt.runPromise(verifyTask(t("chain")))
    expect(bad.ok).toBe(false)
    expect(bad.divergences).toContainEqual({ field: "payloadAt", live: "4", expected: "0-4" })
    // A range past the history's end is reported too (not a crash on the entries it names).
    await rt.runPromise(redisDo((c) => c.hset(k.task, "payloadAt", "0-99")))
    expect((await rt.runPromise(verifyTask(t("chain")))).divergences).toContainEqual({ field: "payloadAt", live: "0-99", expected: "0-4" })
    expect(await rt.runPromise(rebuildProjections({ fix: true }))).toMatchObject({ divergent: 1, fixed: 1 })
    expect(await rt.runPromise(redisDo((c) => c.hget(k.task, "payloadAt")))).toBe("0-4")
    expect(await rt.runPromise(liveState(t("chain")))).toEqual(live)
  })

  it("covers a waiting parent: its wait, results, children and deadline are verified and rebuilt", async () => {
    const { ks, rt } = open(2)
    const id = "w-parent"
    const now = Date.now() - 1_000
    await rt.runPromise(exec([
      { _tag: "Enqueue", taskId: id, agent: "chat", ownerId: "o", payload: {}, maxRetries: 1, batchId: "b-9", now },
      { _tag: "Claim", taskId: id, lease: 0, worker: "w", now: now + 1 },
      { _tag: "SpawnChildren", taskId: id, lease: 1, children: [{ id: "kid-1", agent: "other" }, { id: "kid-2", agent: "other" }], now: now + 2 },
      { _tag: "ChildFinished", taskId: id, childId: "kid-1", status: "completed", output: { n: 1 }, now: now + 3 },
      {
        _tag: "Wait",
        taskId: id,
        lease: 1,
        payload: { parked: true },
        steeringApplied: 0,
        pending: [{ id: "kid-1", kind: "child" }, { id: "kid-2", kind: "child", timeoutAt: now + 60_000 }, { id: "ok", kind: "result", token: "t" }],
        now: now + 4
      }
    ]))
    expect(await rt.runPromise(verifyTask(id))).toMatchObject({ ok: true, expectedStatus: "waiting" })
    const k = taskKeys(ks, id)
    await rt.runPromise(redisDo((c) => c.multi().del(k.wait, k.children).hdel(k.results, "kid-1").zrem(k.waits, id).exec()))
    const bad = await rt.runPromise(verifyTask(id))
    expect(bad.divergences.map((d) => d.field)).toEqual(["children", "wait", "results", "waits"])
    await rt.runPromise(rebuildProjections({ fix: true }))
    expect(await rt.runPromise(verifyTask(id))).toMatchObject({ ok: true, divergences: [] })
    expect(await rt.runPromise(liveState(id))).toMatchObject({
      status: "waiting",
      deadline: now + 60_000,
      batchId: "b-9",
      results: { "kid-1": { kind: "child", agent: "other", status: "completed", output: { n: 1 } } }
    })
  })

  it("reports a task missing from its index and a stray index entry", async () => {
    const { ks, rt } = open()
    const { t } = await rt.runPromise(seed("i"))
    const k = taskKeys(ks, t("queued"))
    await rt.runPromise(redisDo((c) => c.multi().zrem(k.index("queued"), t("queued")).zadd(k.index("failed"), 1, t("queued")).exec()))
    const r = await rt.runPromise(verifyTask(t("queued")))
    expect(r.divergences.map((d) => d.field)).toEqual(["index", "index"])
    await rt.runPromise(rebuildProjections({ fix: true }))
    expect((await rt.runPromise(verifyTask(t("queued")))).ok).toBe(true)
  })
})

describe("export and import", () => {
  it("round-trips every history: replay in the imported namespace gives the same states", async () => {
    const source = open(4)
    const { ids } = await source.rt.runPromise(seed("x"))
    const text = await source.rt.runPromise(collectText(exportHistories({ pageSize: 3, batchSize: 2 })))
    const lines = text.trimEnd().split("\n")
    expect(lines).toHaveLength(ids.length)
    expect(await source.rt.runPromise(countIndexed())).toBe(ids.length - 1) // the expired one has no index entry
    const exported = lines.map((l) => JSON.parse(l) as { taskId: string; events: Array<unknown> })
    expect(exported.map((l) => l.taskId).sort()).toEqual([...ids].sort())
    const records = await source.rt.runPromise(Stream.runCollect(exportRecords()))
    expect(records.map((r) => JSON.parse(JSON.stringify(r)))).toEqual(
      expect.arrayContaining(exported)
    )

    const target = open(3)
    const report = await target.rt.runPromise(importHistories(Stream.fromIterable(lines)))
    expect(report.tasks).toBe(ids.length)
    expect(report.events).toBe(exported.reduce((n, l) => n + l.events.length, 0))
    for (const id of ids) {
      const a = await source.rt.runPromise(replayTask(id))
      const b = await target.rt.runPromise(replayTask(id))
      expect(b, id).toEqual(a)
      expect((await target.rt.runPromise(verifyTask(id))).ok, id).toBe(true)
    }
    expect((await target.rt.runPromise(verifyAll())).divergent).toBe(0)
    expect((await target.rt.runPromise(rebuildProjections())).divergent).toBe(0)

    // Export of the imported namespace (no partition logs: expired tasks found by scan) gives the same lines.
    const again = await target.rt.runPromise(collectText(exportHistories()))
    expect(again.trimEnd().split("\n").sort()).toEqual([...lines].sort())

    // Importing again is refused: the namespace is not empty.
    const refused = await target.rt.runPromiseExit(importHistories(Stream.fromIterable(lines)))
    expect(JSON.stringify(refused)).toContain("NamespaceNotEmpty")
  })

  it("selects by the time a task entered its status, by agent, and finds expired tasks by log or scan", async () => {
    const { rt } = open()
    const base = Date.now() - 60_000
    const first = await rt.runPromise(seed("a", base))
    const second = await rt.runPromise(seed("b", base + 20_000))
    const mid = base + 10_000
    const idsOf = async (options: Parameters<typeof exportHistories>[0]) =>
      (await rt.runPromise(collectText(exportHistories(options)))).trimEnd().split("\n").filter((l) => l !== "")
        .map((l) => (JSON.parse(l) as { taskId: string }).taskId).sort()

    expect(await idsOf({ since: mid })).toEqual([...second.ids].sort())
    expect(await idsOf({ until: mid })).toEqual([...first.ids].sort())
    expect(await idsOf({ agent: "tools" })).toEqual([first.t("failed"), first.t("running"), second.t("failed"), second.t("running")].sort())
    expect(await idsOf({ since: mid, expiredSource: "log" })).toEqual([...second.ids].sort())
    expect(await idsOf({ since: mid, expiredSource: "scan" })).toEqual([...second.ids].sort())
    expect(await idsOf({ since: second.lastAt + 1 })).toEqual([])
    expect(await idsOf({ statuses: ["expired"] })).toEqual([first.t("expired"), second.t("expired")].sort())
    expect(await idsOf({ statuses: ["completed", "failed"], since: mid })).toEqual([second.t("done"), second.t("failed")].sort())
    expect(await idsOf({ statuses: ["expired"], expiredSource: "scan", until: mid })).toEqual([first.t("expired")])
  })

  it("refuses invalid lines with their line number", async () => {
    const { rt } = open()
    const exit = await rt.runPromiseExit(importHistories(Stream.fromIterable(["", "{\"taskId\":\"a\"}"])))
    expect(JSON.stringify(exit)).toContain("InvalidHistoryLine")
    expect(JSON.stringify(exit)).toContain("\"line\":2")
  })
})
