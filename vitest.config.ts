import { defineConfig } from "vitest/config"

/** Seed nodes of the local cluster the "cluster" project starts (scripts/redis-cluster.sh). */
const clusterBase = Number(process.env.CLUSTER_BASE_PORT ?? 7101)
const clusterNodes = [0, 1, 2].map((i) => `127.0.0.1:${clusterBase + i}`).join(",")

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: { name: "standalone", include: ["test/**/*.test.ts"] }
      },
      {
        // The integration suite again, on a 3-master Redis Cluster with 4 partitions (and the audit tools,
        // whose pipelines must stay within a partition's slot, and the CLI with --cluster-nodes).
        extends: true,
        test: {
          name: "cluster",
          include: ["test/src/**/*.test.ts", "test/streams/**/*.test.ts", "test/audit/**/*.test.ts", "test/cli/Cluster.test.ts"],
          globalSetup: ["test/support/clusterSetup.ts"],
          env: { REDIS_CLUSTER_NODES: clusterNodes, TEST_PARTITIONS: "4", CLUSTER_BASE_PORT: String(clusterBase) }
        }
      }
    ]
  }
})
