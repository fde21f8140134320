/**
 * Redis command statistics for a measured window: CONFIG RESETSTAT at its start, INFO commandstats at
 * its end. Commands run inside Lua scripts are counted too (Redis 7), so a script call shows up as one
 * `evalsha` plus the commands it ran. Reported per job, which shows where round trips and work go.
 * The window's longest single command comes from the SLOWLOG (reset with the statistics, logging from
 * `SLOW_US`): Redis runs one command at a time, so it is how long every other client had to wait at worst.
 */
import type { Redis } from "ioredis"

export interface CommandStat {
  readonly calls: number
  readonly usec: number
}

export type CommandStats = Readonly<Record<string, CommandStat>>

/** Commands at least this long (µs) are logged, so the longest one of a window is found. */
export const SLOW_US = 1_000

/** The harness's own commands (stats, memory sampling): not the systems' work. */
const harness = (command: string) => ["config", "info", "flushall", "memory", "scan", "ping", "slowlog"].includes(command)

export const resetStats = async (admin: Redis): Promise<void> => {
  await admin.config("RESETSTAT")
  await admin.config("SET", "slowlog-log-slower-than", String(SLOW_US), "slowlog-max-len", "1024")
  await admin.call("SLOWLOG", "RESET")
}

export interface Slowest {
  /** Its duration in µs (0: none took `SLOW_US` or longer). */
  readonly us: number
  /** The command, with the function or script it ran (`fcall claimnext`). */
  readonly command: string
}

/** The longest command since `resetStats`. */
export const readSlowest = async (admin: Redis): Promise<Slowest> => {
  const entries = (await admin.call("SLOWLOG", "GET", "1024")) as Array<[number, number, number, Array<string>]>
  let slowest: Slowest = { us: 0, command: "" }
  for (const [, , us, args] of entries) {
    const name = String(args[0] ?? "").toLowerCase()
    if (harness(name) || us <= slowest.us) continue
    slowest = { us, command: name === "fcall" || name === "evalsha" ? `${name} ${String(args[1] ?? "").slice(0, 24)}` : name }
  }
  return slowest
}

export const readStats = async (admin: Redis): Promise<CommandStats> => {
  const info = await admin.info("commandstats")
  const out: Record<string, CommandStat> = {}
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    const name = m[1]!
    if (harness(name.split("|")[0]!)) continue
    out[name] = { calls: Number(m[2]), usec: Number(m[3]) }
  }
  return out
}

/** Total server time (µs) per job, and the top commands by calls per job. */
export const perJob = (stats: CommandStats, jobs: number) => {
  const rows = Object.entries(stats)
    .map(([cmd, s]) => ({ cmd, callsPerJob: s.calls / jobs, usecPerJob: s.usec / jobs }))
    .sort((a, b) => b.usecPerJob - a.usecPerJob)
  const scripts = ["evalsha", "eval", "fcall"]
  const top = (names: ReadonlyArray<string>) =>
    rows.filter((r) => names.includes(r.cmd)).reduce((a, r) => a + r.callsPerJob, 0)
  return {
    /** By server time; the commands scripts ran are listed too (their time is inside the script's). */
    rows,
    /** Server time in scripts per job (including the commands they ran). */
    scriptUsecPerJob: rows.filter((r) => scripts.includes(r.cmd)).reduce((a, r) => a + r.usecPerJob, 0),
    /** Calls that are round trips from a client (scripts and plain commands, not those run inside scripts). */
    scriptCallsPerJob: top(["evalsha", "eval", "fcall"])
  }
}
