/**
 * Global setup of the "cluster" test project: starts the local 3-master Redis Cluster (idempotent) and
 * stops it at the end if this run started it.
 */
import { execFileSync } from "node:child_process"
import { resolve } from "node:path"

const script = resolve(import.meta.dirname, "../../scripts/redis-cluster.sh")
const base = process.env.CLUSTER_BASE_PORT ?? "7101"

export default function setup() {
  const running = (() => {
    try {
      return execFileSync("redis-cli", ["-p", base, "cluster", "info"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
        .includes("cluster_state:ok")
    } catch {
      return false
    }
  })()
  if (!running) {
    try {
      execFileSync("bash", [script, "start", base], { stdio: "pipe" })
    } catch {
      // A cluster of an earlier run may still be shutting down on these ports: clean up once and retry.
      execFileSync("bash", [script, "stop", base], { stdio: "ignore" })
      execFileSync("bash", [script, "start", base], { stdio: "pipe" })
    }
  }
  return () => {
    if (!running) execFileSync("bash", [script, "stop", base], { stdio: "ignore" })
  }
}
