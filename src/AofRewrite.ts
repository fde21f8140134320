/**
 * Rewrites a Redis server's append-only file once after it started, so that a crash-restart cannot bring
 * back half of a transaction at the *next* restart.
 *
 * Why (Redis 7.0.15, `test/faults/aof-torn-transaction.test.ts`): when a kill tears the AOF in the middle of a
 * command of a MULTI/EXEC block (every script's effects are one such block), the restart correctly leaves the
 * block out of memory, but truncates the file after the block's last whole command instead of before its
 * MULTI. The file then ends in an open MULTI; what the server appends next goes after it, and the following
 * restart replays the torn block's first commands as part of the next EXEC: a task's history gets an event
 * whose status change never happened. A rewrite replaces the file with the (correct) data set in memory.
 *
 * Invariant: on every server (every master of a Cluster) with `aof_enabled:1` that has not rewritten its AOF
 * since it started (`aof_rewrites:0`) and is neither loading nor rewriting, one BGREWRITEAOF is asked for.
 * Several processes may ask at once: Redis runs one and refuses or schedules the rest. A server that refuses
 * the command (disabled on a managed service) is reported and left alone.
 */
import { Effect } from "effect"
import { masters, type RedisConnection } from "../streams/RedisClient.ts"

const field = (info: string, name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim()

/** Whether a server's `INFO persistence` says its AOF should be rewritten now. */
export const needsAofRewrite = (info: string): boolean =>
  field(info, "aof_enabled") === "1" && field(info, "loading") === "0" && field(info, "aof_rewrites") === "0" &&
  field(info, "aof_rewrite_in_progress") === "0" && field(info, "aof_rewrite_scheduled") === "0"

/** Asks every server that needs it for one BGREWRITEAOF; returns how many were asked. Never fails. */
export const rewriteAofAfterRestart = (conn: RedisConnection): Effect.Effect<number> =>
  Effect.promise(async () => {
    let asked = 0
    await Promise.all(masters(conn).map(async (server) => {
      if (!needsAofRewrite(await server.info("persistence"))) return
      asked++
      // Another process asked first: that rewrite is the one needed.
      await server.bgrewriteaof().catch((e: unknown) => {
        if (!String(e).includes("already in progress")) throw e
      })
    }))
    return asked
  }).pipe(
    Effect.catchDefect((e) => Effect.as(Effect.logWarning(`append-only file rewrite after a restart not started: ${String(e)}`), 0))
  )
