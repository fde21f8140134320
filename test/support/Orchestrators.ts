/**
 * Shared pieces of the in-process runtime tests: orchestrators on the test Redis that are stopped after
 * each test, and `waitFor`, which polls until a condition holds (tests never assert on timings).
 */
import { afterEach } from "vitest"
import { Orchestrator } from "../../src/Orchestrator.ts"
import { testPartitions, testRedisOptions } from "./TestRedis.ts"

/** An orchestrator factory whose orchestrators are stopped after every test of the calling file. */
export const orchestrators = () => {
  const open: Array<Orchestrator> = []
  afterEach(async () => {
    await Promise.all(open.splice(0).map((o) => o.stop()))
  })
  return (namespace: string) => {
    const o = new Orchestrator({ ...testRedisOptions, namespace, partitions: testPartitions })
    open.push(o)
    return o
  }
}

/** Polls `f` every 25 ms until `ok` holds; fails with the last value after `ms`. */
export const waitFor = async <A>(f: () => Promise<A>, ok: (a: A) => boolean, ms = 10_000): Promise<A> => {
  const end = Date.now() + ms
  for (;;) {
    const a = await f()
    if (ok(a)) return a
    if (Date.now() > end) throw new Error(`timed out waiting; last value ${JSON.stringify(a)}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}
