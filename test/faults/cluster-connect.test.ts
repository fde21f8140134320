/**
 * Connecting to a Redis Cluster that is still converging: its nodes have their slots and have just met, and
 * some still answer cluster_state:fail. ioredis reconnects until the Cluster is ready but never settles its own
 * connect() promise then; our connect must return once the connection is ready (it used to wait forever).
 * Its three nodes are private to this test, on their own ports, stopped by pid at the end.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, expect, it } from "vitest"
import { connect, makeConnection } from "../../streams/RedisClient.ts"

const base = Number(process.env.CONNECT_CLUSTER_PORT ?? 7231)
const ports = [base, base + 1, base + 2]
const dir = mkdtempSync(join(tmpdir(), "factorial-cluster-connect-"))
const cli = (port: number, ...args: ReadonlyArray<string>) => execFileSync("redis-cli", ["-p", String(port), ...args], { encoding: "utf8" })

/** Whether process `pid` still runs. */
const running = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

afterAll(async () => {
  const pids: Array<number> = []
  for (const p of ports) {
    try {
      const pid = Number(readFileSync(join(dir, `${p}.pid`), "utf8"))
      process.kill(pid)
      pids.push(pid)
    } catch {
      // not started, or gone already
    }
  }
  // A server writes its log until it exits: removing the directory before that races with it (ENOTEMPTY).
  for (let i = 0; i < 100 && pids.some(running); i++) await new Promise((r) => setTimeout(r, 50))
  rmSync(dir, { recursive: true, force: true })
})

it("connects to a Cluster whose nodes still say cluster_state:fail, once it is ready", async () => {
  for (const p of ports) {
    execFileSync("redis-server", [
      "--port", String(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${p}.conf`),
      "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "yes",
      "--pidfile", join(dir, `${p}.pid`), "--logfile", join(dir, `${p}.log`)
    ])
  }
  for (const p of ports) {
    for (let i = 0; i < 50 && !cli(p, "ping").includes("PONG"); i++) await new Promise((r) => setTimeout(r, 100))
  }
  // Slots split in thirds, then the nodes meet: for a moment afterwards some of them say cluster_state:fail.
  const thirds = [[0, 5460], [5461, 10922], [10923, 16383]] as const
  ports.forEach((p, k) => cli(p, "cluster", "addslotsrange", String(thirds[k]![0]), String(thirds[k]![1])))
  for (const p of ports.slice(1)) cli(ports[0]!, "cluster", "meet", "127.0.0.1", String(p))
  expect(ports.map((p) => cli(p, "cluster", "info").includes("cluster_state:ok"))).toContain(false)

  const conn = makeConnection({ clusterNodes: ports.map((port) => ({ host: "127.0.0.1", port })) })
  try {
    const outcome = await Promise.race([
      connect(conn).then(() => "connected"),
      new Promise((r) => setTimeout(() => r("still waiting after 15 s"), 15_000))
    ])
    expect(outcome).toBe("connected")
    await conn.set("{cc}:k", "v")
    expect(await conn.get("{cc}:k")).toBe("v")
  } finally {
    conn.disconnect()
  }
}, 40_000)
