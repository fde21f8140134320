/**
 * A private Redis for one harness run: `redis-server` on a free loopback port with persistence off
 * (`--save "" --appendonly no`), started as a child process and killed by its pid at the end (also on
 * SIGINT/SIGTERM and on an uncaught error). The shared server on 6379 is never touched. `args` adds
 * options (the cluster bench starts its masters through here with `--cluster-enabled yes`); `wrap` runs the
 * server under another program (the hot-path bench: `valgrind --tool=callgrind …`).
 */
import { spawn, type ChildProcess } from "node:child_process"
import { createServer } from "node:net"
import { Redis } from "ioredis"

export interface PrivateRedis {
  readonly port: number
  readonly url: string
  readonly pid: number
  readonly version: string
  /** A plain connection for the harness's own commands (FLUSHALL, INFO, MEMORY USAGE). */
  readonly admin: Redis
  readonly stop: () => Promise<void>
}

/** Ports other Redis servers of the project use (shared, CI, local test clusters): never picked. */
const reservedPorts = new Set([6379, 6399, 7101, 7102, 7103, 7401, 7402, 7403])

const anyFreePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once("error", reject)
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      srv.close(() => resolve(port))
    })
  })

/** A free loopback port (the OS picks one from its ephemeral range), never one of `reservedPorts`. */
export const freePort = async (): Promise<number> => {
  for (;;) {
    const port = await anyFreePort()
    if (!reservedPorts.has(port)) return port
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const startRedis = async (
  options: {
    readonly binary?: string
    readonly port?: number
    readonly args?: ReadonlyArray<string>
    readonly wrap?: ReadonlyArray<string>
  } = {}
): Promise<PrivateRedis> => {
  const binary = options.binary ?? "redis-server"
  const port = options.port ?? await freePort()
  const argv = [binary, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    "--daemonize", "no", "--loglevel", "warning", ...(options.args ?? [])]
  const [program, ...rest] = [...(options.wrap ?? []), ...argv]
  const child: ChildProcess = spawn(program!, rest, { stdio: ["ignore", "ignore", "inherit"] })
  const pid = child.pid
  if (pid === undefined) throw new Error(`could not start ${binary}`)
  const kill = () => {
    try {
      process.kill(pid, "SIGTERM")
    } catch {
      // already gone
    }
  }
  process.once("exit", kill)
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      kill()
      process.exit(130)
    })
  }
  const admin = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: null, retryStrategy: () => 50 })
  admin.on("error", () => {})
  for (let i = 0; ; i++) {
    try {
      await admin.connect()
      await admin.ping()
      break
    } catch (e) {
      if (i > 400) {
        kill()
        throw new Error(`private redis on port ${port} did not answer: ${String(e)}`)
      }
      admin.disconnect()
      await sleep(50)
    }
  }
  const info = await admin.info("server")
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? "?"
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid,
    version,
    admin,
    stop: async () => {
      admin.disconnect()
      kill()
      await new Promise<void>((r) => (child.exitCode !== null ? r() : child.once("exit", () => r())))
    }
  }
}

/** CPU seconds (user + system) a redis-server has used so far (INFO cpu). */
export const redisCpuSeconds = async (admin: Redis): Promise<number> => {
  const info = await admin.info("cpu")
  const v = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, "m").exec(info)?.[1] ?? 0)
  return v("used_cpu_user") + v("used_cpu_sys")
}
