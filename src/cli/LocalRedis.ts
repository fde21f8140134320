/**
 * Finds a Redis for commands run on a developer's machine: `REDIS_URL` if set; else 127.0.0.1:6379 if it
 * answers; else a private `redis-server` on a free loopback port (nothing persisted), stopped with the
 * process. Fails with a clear message when none of these is possible.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { createServer, Socket } from "node:net"

const answers = (port: number, host = "127.0.0.1"): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = new Socket()
    socket.setTimeout(500)
    socket.once("connect", () => {
      socket.write("PING\r\n")
    })
    socket.once("data", (d) => {
      socket.destroy()
      resolve(d.toString().startsWith("+PONG") || d.toString().startsWith("-NOAUTH"))
    })
    socket.once("timeout", () => {
      socket.destroy()
      resolve(false)
    })
    socket.once("error", () => resolve(false))
    socket.connect(port, host)
  })

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })

export interface LocalRedis {
  readonly url: string
  /** Stops the private server, if one was started. */
  readonly stop: () => void
  readonly started: boolean
}

export const findOrStartRedis = async (): Promise<LocalRedis> => {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, stop: () => {}, started: false }
  if (await answers(6379)) return { url: "redis://127.0.0.1:6379", stop: () => {}, started: false }
  const port = await freePort()
  let child: ChildProcess
  try {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore"
    })
  } catch {
    throw new Error("no Redis found: set REDIS_URL, run Redis on 127.0.0.1:6379, or install redis-server")
  }
  const failed = new Promise<never>((_, reject) =>
    child.once("error", () =>
      reject(new Error("no Redis found: set REDIS_URL, run Redis on 127.0.0.1:6379, or install redis-server"))
    )
  )
  const stop = () => {
    if (child.exitCode === null) child.kill("SIGTERM")
  }
  process.once("exit", stop)
  for (let i = 0; i < 50; i++) {
    const up = await Promise.race([answers(port), failed])
    if (up) return { url: `redis://127.0.0.1:${port}`, stop, started: true }
    await new Promise((r) => setTimeout(r, 100))
  }
  stop()
  throw new Error(`redis-server did not answer on port ${port}`)
}
