/**
 * A private Redis Cluster for one harness run: three masters, each a `redis-server --cluster-enabled yes`
 * started through bench/redis-server.ts (free loopback port, nothing persisted, killed by its pid), with
 * its cluster bus on a free port of its own (`--cluster-port`, Redis 7+) and a third of the 16,384 slots.
 * What scripts/redis-cluster.sh does for the tests, but as child processes of the harness.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort, type PrivateRedis, startRedis } from "./redis-server.ts"

export interface PrivateCluster {
  readonly masters: ReadonlyArray<PrivateRedis>
  /** Seed nodes for `new Orchestrator({ clusterNodes })`. */
  readonly seeds: ReadonlyArray<{ readonly host: string; readonly port: number }>
  readonly version: string
  /** The master serving the slot of `key`. */
  readonly masterOf: (key: string) => Promise<PrivateRedis>
  readonly stop: () => Promise<void>
}

const SLOTS = 16384
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const startCluster = async (mastersCount = 3): Promise<PrivateCluster> => {
  const dir = mkdtempSync(join(tmpdir(), "factorial-bench-cluster-"))
  const masters: Array<PrivateRedis> = []
  const removeDir = () => rmSync(dir, { recursive: true, force: true })
  // The servers are killed on exit by redis-server.ts; their config directory goes with them.
  process.once("exit", removeDir)
  const stop = async () => {
    await Promise.all(masters.map((m) => m.stop()))
    removeDir()
    process.off("exit", removeDir)
  }
  try {
    const busPorts: Array<number> = []
    for (let k = 0; k < mastersCount; k++) {
      const port = await freePort()
      const bus = await freePort()
      busPorts.push(bus)
      masters.push(await startRedis({
        port,
        args: ["--cluster-enabled", "yes", "--cluster-port", String(bus), "--cluster-config-file",
          join(dir, `nodes-${port}.conf`), "--cluster-node-timeout", "2000", "--dir", dir]
      }))
    }
    const ranges = masters.map((_, k) => [Math.floor((k * SLOTS) / mastersCount), Math.floor(((k + 1) * SLOTS) / mastersCount) - 1] as const)
    await Promise.all(masters.map((m, k) => {
      const [from, to] = ranges[k]!
      return m.admin.call("CLUSTER", "ADDSLOTS", ...Array.from({ length: to - from + 1 }, (_, s) => String(from + s)))
    }))
    for (let k = 1; k < mastersCount; k++) {
      await masters[0]!.admin.call("CLUSTER", "MEET", "127.0.0.1", String(masters[k]!.port), String(busPorts[k]!))
    }
    const ready = async (m: PrivateRedis) => {
      const info = String(await m.admin.call("CLUSTER", "INFO"))
      return info.includes("cluster_state:ok") && info.includes(`cluster_known_nodes:${mastersCount}`) &&
        info.includes(`cluster_slots_assigned:${SLOTS}`)
    }
    for (let i = 0; !(await Promise.all(masters.map(ready))).every(Boolean); i++) {
      if (i > 300) throw new Error("the private cluster did not reach cluster_state:ok within 30 s")
      await sleep(100)
    }
    return {
      masters,
      seeds: masters.map((m) => ({ host: "127.0.0.1", port: m.port })),
      version: masters[0]!.version,
      masterOf: async (key) => {
        const slot = Number(await masters[0]!.admin.call("CLUSTER", "KEYSLOT", key))
        const k = ranges.findIndex(([from, to]) => slot >= from && slot <= to)
        return masters[k]!
      },
      stop
    }
  } catch (e) {
    await stop()
    throw e
  }
}
