/**
 * The deployments the cluster bench compares: our orchestrator on a standalone Redis or on the private
 * 3-master Cluster, with 1 or N partitions. A topology knows the orchestrator options to open, how to
 * empty its servers between runs, where each partition's log lives (for the observer), how the
 * partitions spread over the servers, and how much CPU its servers have used.
 *
 * Each topology keeps one namespace, emptied by FLUSHALL before every run. On the Cluster it is chosen so
 * the partitions spread as evenly as they can over the masters (6 partitions: 2 per master): which
 * master a partition's hash tag `{<namespace>:<p>}` lands on depends on the name, and with a few
 * partitions an arbitrary name often leaves one master with more (see docs/scaling.md).
 */
import type { OrchestratorOptions } from "../src/Orchestrator.ts"
import { partitionKeys, partitionPrefix } from "../streams/Keys.ts"
import type { WatchedStream } from "./observer.ts"
import type { PrivateCluster } from "./redis-cluster.ts"
import { type PrivateRedis, redisCpuSeconds } from "./redis-server.ts"

export interface Topology {
  /** "standalone" or "cluster (3 masters)". */
  readonly label: string
  readonly kind: "standalone" | "cluster"
  readonly partitions: number
  readonly options: OrchestratorOptions & { readonly namespace: string }
  /** Every partition's log and the server holding it. */
  readonly logs: ReadonlyArray<WatchedStream>
  /** Partitions on each server, in the order of `servers`. */
  readonly spread: ReadonlyArray<number>
  readonly servers: ReadonlyArray<PrivateRedis>
  readonly flush: () => Promise<void>
  /** CPU seconds each server has used so far, in the order of `servers`. */
  readonly cpuSeconds: () => Promise<ReadonlyArray<number>>
}

const base = (servers: ReadonlyArray<PrivateRedis>) => ({
  servers,
  flush: async () => {
    await Promise.all(servers.map((s) => s.admin.flushall()))
  },
  cpuSeconds: () => Promise.all(servers.map((s) => redisCpuSeconds(s.admin)))
})

export const standaloneTopology = (redis: PrivateRedis, partitions: number): Topology => {
  const namespace = `cb-s${partitions}`
  const ks = { namespace, partitions }
  return {
    label: "standalone",
    kind: "standalone",
    partitions,
    options: { redisUrl: redis.url, namespace, partitions },
    logs: Array.from({ length: partitions }, (_, p) => ({ port: redis.port, stream: partitionKeys(ks, p).events })),
    spread: [partitions],
    ...base([redis])
  }
}

export const clusterTopology = async (cluster: PrivateCluster, partitions: number): Promise<Topology> => {
  const masters = cluster.masters
  for (let attempt = 0; attempt < 1000; attempt++) {
    const namespace = `cb-c${partitions}-${attempt}`
    const ks = { namespace, partitions }
    const owners = await Promise.all(Array.from({ length: partitions }, (_, p) => cluster.masterOf(partitionPrefix(ks, p))))
    const spread = masters.map((m) => owners.filter((o) => o === m).length)
    if (Math.max(...spread) - Math.min(...spread) > 1) continue
    return {
      label: `cluster (${masters.length} masters)`,
      kind: "cluster",
      partitions,
      options: { clusterNodes: cluster.seeds, namespace, partitions },
      logs: owners.map((o, p) => ({ port: o.port, stream: partitionKeys(ks, p).events })),
      spread,
      ...base(masters)
    }
  }
  throw new Error(`no namespace spreads ${partitions} partitions evenly over ${masters.length} masters`)
}
