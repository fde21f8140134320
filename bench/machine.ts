/** The machine and software a run measured, for the report. */
import { cpus, release, totalmem, type as osType } from "node:os"
import { createRequire } from "node:module"

const require = createRequire(import.meta.url)
const versionOf = (pkg: string): string => {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version
  } catch {
    return "?"
  }
}

export interface Machine {
  readonly cpu: string
  readonly cores: number
  readonly memoryGiB: number
  readonly os: string
  readonly node: string
  readonly redis: string
  readonly packages: Readonly<Record<string, string>>
}

export const describeMachine = (redisVersion: string): Machine => ({
  cpu: cpus()[0]?.model ?? "?",
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  os: `${osType()} ${release()}`,
  node: process.version,
  redis: redisVersion,
  packages: { bullmq: versionOf("bullmq"), ioredis: versionOf("ioredis"), effect: versionOf("effect") }
})

export const machineLine = (m: Machine): string =>
  `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB RAM, ${m.os}; Node ${m.node}, Redis ${m.redis} ` +
  `(private, loopback, no persistence), bullmq ${m.packages.bullmq}, ioredis ${m.packages.ioredis}, effect ${m.packages.effect}`
