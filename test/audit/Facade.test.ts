/**
 * The Promise facade `Audit` over an Orchestrator: history as an async iterable, replay, verify, and
 * export → import between two orchestrators' namespaces, with the same typed errors as the Effect API.
 */
import { afterAll, describe, expect, it } from "vitest"
import { Audit } from "../../src/audit/index.ts"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { freshKeyspace, testRedisOptions } from "../support/TestRedis.ts"
import { seed } from "./fixtures.ts"

const open: Array<Orchestrator> = []
const make = () => {
  const ks = freshKeyspace()
  const o = new Orchestrator({ ...testRedisOptions, namespace: ks.namespace, partitions: ks.partitions })
  open.push(o)
  return o
}
afterAll(async () => {
  await Promise.all(open.map((o) => o.stop()))
})

describe("Audit (Promise API)", () => {
  it("pages, replays, verifies, exports and imports", async () => {
    const source = make()
    const { ids, t } = await source.runEffect(seed("f"))
    const audit = new Audit(source)

    const seen: Array<number> = []
    for await (const e of audit.history(t("done"), { pageSize: 3 })) seen.push(e.version)
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8])

    const replay = await audit.replayTask(t("done"), { upTo: 6 })
    expect(replay.state?.turns).toBe(2)
    expect(replay.steps.at(-1)?.messages).toHaveLength(4)
    expect((await audit.verifyTask(t("running"))).ok).toBe(true)
    expect(await audit.verifyAll()).toMatchObject({ checked: ids.length - 1, divergent: 0 })

    let text = ""
    for await (const chunk of audit.exportHistories({ pageSize: 2 })) text += chunk
    const lines = text.trimEnd().split("\n")
    expect(lines).toHaveLength(ids.length)
    const records: Array<string> = []
    for await (const r of audit.exportRecords({ statuses: ["expired"] })) records.push(r.taskId)
    expect(records).toEqual([t("expired")])

    const target = new Audit(make())
    async function* feed() {
      yield* lines
    }
    expect(await target.importHistories(feed())).toMatchObject({ tasks: ids.length })
    expect((await target.verifyAll()).divergent).toBe(0)
    expect(await target.replayTask(t("done"))).toEqual(await audit.replayTask(t("done")))

    await expect(audit.replayTask("missing")).rejects.toMatchObject({ _tag: "TaskNotFound" })
    await expect(target.importHistories(lines)).rejects.toMatchObject({ _tag: "NamespaceNotEmpty" })
  })
})
