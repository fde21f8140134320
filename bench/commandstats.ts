/**
 * Redis command statistics for a measured window: CONFIG RESETSTAT at its start, INFO commandstats at
 * its end. Commands run inside Lua scripts are counted too (Redis 7), so a script call shows up as one
 * `evalsha` plus the commands it ran. Reported per job, which shows where round trips and work go.
 */
import type { Redis } from "ioredis"

export interface CommandStat {
  readonly calls: number
  readonly usec: number
}

export type CommandStats = Readonly<Record<string, CommandStat>>

export const resetStats = async (admin: Redis): Promise<void> => {
  await admin.config("RESETSTAT")
}

export const readStats = async (admin: Redis): Promise<CommandStats> => {
  const info = await admin.info("commandstats")
  const out: Record<string, CommandStat> = {}
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    const name = m[1]!
    // The harness's own commands (stats, memory sampling) are not the systems' work.
    if (["config", "info", "flushall", "memory", "scan", "ping"].includes(name.split("|")[0]!)) continue
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
