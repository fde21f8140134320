/**
 * The Lua that writes task and batch transitions, as one Redis Function library: one `.lua` file per
 * transition in `streams/lua/`, each the body of a function registered after `lib.lua` (the batch scripts
 * after `batch_lib.lua`), plus `read` (a task's state for readers in one call). The helpers are defined once, when the library loads, not on every call as with
 * EVALSHA (about 3.5 µs a call on the bench machine); each function starts with `begin(KEYS, ARGV)`.
 *
 * The library and its functions are named with a hash of the source (`factorial_<v>`, `fx_<v>_<name>`), so
 * processes running different versions on one Redis each call their own (a rolling upgrade). It is loaded on
 * every master at start-up (FUNCTION LOAD REPLACE: a syntax error fails the boot); Redis keeps functions in
 * its RDB and AOF and copies them to replicas. A call that finds its function missing (a server restarted
 * without persistence, FUNCTION FLUSH) loads the library again and is sent again: it had not run.
 *
 * Every script returns `{ "ok", ... }` or `{ "rejected", reason, status, lease, pending, detail }`; `parseReply`
 * is the only place that reads that status word.
 */
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Cluster } from "ioredis"
import { INDEX_ANCHOR } from "./Keys.ts"
import type { TaskStatus } from "./TaskEvent.ts"
import type { RedisConnection } from "./RedisClient.ts"

export const scriptNames = [
  "enqueue",
  "claim",
  "claimnext",
  "heartbeat",
  "checkpoint",
  "complete",
  "fail",
  "release",
  "cancel",
  "steer",
  "recover",
  "wake",
  "expire",
  "wait",
  "spawn",
  "deliver",
  "child_finished",
  "timeout",
  "settled",
  "read"
] as const
export type ScriptName = typeof scriptNames[number]

/**
 * The commits a worker sends with its next claim, each also registered fused with `claimnext` (`<commit>_next`):
 * the commit runs as a function, then the claim, in one call and one atomic step. The commit's arguments come
 * first and `claimnext`'s three (worker, agent, count) last; the reply is flat, `{ n, <commit's reply: n
 * elements>, <claimnext's reply> }` (each table in a reply costs Redis a dozen lookups: lib.lua's claim_view).
 * One call per turn instead of two: each call costs the Lua around the commands (argument tables, the reply).
 */
export const fusedCommits = ["checkpoint", "complete", "fail", "release"] as const
export type FusedCommit = typeof fusedCommits[number]

/**
 * Several fused commits of one partition and the claim of as many next tasks, in one call (`commits_next`):
 * the commits a worker's slots made while Redis was behind (TaskStore.claimNext gathers them). Keys:
 * each commit's three, in order. Arguments: the number of commits; for each, its name, its argument count and
 * its arguments (prefix, task id, now, …); then `claimnext`'s six (prefix, "", now, worker, agent, count).
 * The reply is flat: for each commit `n, <its reply: n elements>` (`{ "error", message }` for a commit that
 * raised an error: the others still run), then `claimnext`'s reply. One call instead
 * of one per slot: the call's own cost (its arguments, the function's lookup, the round trip) and the queue
 * read (XREADGROUP seeks its position in the stream node) are paid once for all of them.
 */
export const COMMITS_NEXT = "commits_next"

/** The batch scripts (after batch_lib.lua), each with the batch's four keys. */
export const batchScriptNames = ["batch_create", "batch_task_finished", "batch_cancel"] as const
export type BatchScriptName = typeof batchScriptNames[number]

export type FunctionName = ScriptName | `${FusedCommit}_next` | typeof COMMITS_NEXT | BatchScriptName

/** Every task script takes the same three keys: task hash, task history, partition log. */
export const TASK_SCRIPT_KEYS = 3
export const BATCH_SCRIPT_KEYS = 4

const luaDir = fileURLToPath(new URL("./lua/", import.meta.url))
const readLua = (name: string): string => readFileSync(`${luaDir}${name}.lua`, "utf8")

/**
 * The library's source with `@` for the version in its names; the version is a hash of this text. Each task
 * transition is a function `T[name](KEYS, ARGV)` of the library, registered under its name; the fused commits
 * and `commits_next` call them.
 */
const template = (() => {
  const fn = (name: string, begin: string, body: string) =>
    `redis.register_function('fx_@_${name}', function(KEYS, ARGV)\n${begin}(KEYS, ARGV)\n${body}\nend)\n`
  const register = (name: string, fn: string) => `redis.register_function('fx_@_${name}', ${fn})\n`
  return [
    "#!lua name=factorial_@\n",
    readLua("lib").replace("@INDEX_ANCHOR@", INDEX_ANCHOR),
    "local T = {}\n",
    `local FUSED = { ${fusedCommits.map((c) => `${c} = true`).join(", ")} }\n`,
    ...scriptNames.map((name) => `T['${name}'] = function(KEYS, ARGV)\nbegin(KEYS, ARGV)\n${readLua(name)}\nend\n`),
    ...scriptNames.map((name) => register(name, `T['${name}']`)),
    // A commit, then claimnext with the same keys and arguments (it reads its own three from the end).
    ...fusedCommits.map((name) =>
      register(
        `${name}_next`,
        `function(KEYS, ARGV)\nlocal committed = T['${name}'](KEYS, ARGV)\nlocal out = { #committed }\n` +
          `append_all(out, committed)\nappend_all(out, T['claimnext'](KEYS, ARGV))\nreturn out\nend`
      )
    ),
    register(
      COMMITS_NEXT,
      `function(KEYS, ARGV)\nlocal out, k, a = {}, 0, 2\nfor _ = 1, tonumber(ARGV[1]) do\n` +
        `  local name, n = ARGV[a], tonumber(ARGV[a + 1])\n` +
        `  if not FUSED[name] then return redis.error_reply('commits_next: not a fused commit: ' .. tostring(name)) end\n` +
        // A commit that raises an error (a command refused, a corrupt key) is reported as that commit's
        // { "error", message } and the others go on, as if each had been its own call (ADR 0013).
        `  local ran, committed = pcall(T[name], { KEYS[k + 1], KEYS[k + 2], KEYS[k + 3] }, { unpack(ARGV, a + 2, a + 1 + n) })\n` +
        `  if not ran then committed = { 'error', type(committed) == 'table' and tostring(committed.err) or tostring(committed) } end\n` +
        `  out[#out + 1] = #committed\n  append_all(out, committed)\n  k, a = k + 3, a + 2 + n\nend\n` +
        `append_all(out, T['claimnext']({ KEYS[k - 2], KEYS[k - 1], KEYS[k] }, { unpack(ARGV, a, a + 5) }))\nreturn out\nend`
    ),
    "do\n",
    readLua("batch_lib"),
    ...batchScriptNames.map((name) => fn(name, "begin_batch", readLua(name))),
    "end\n"
  ].join("\n")
})()

/** The version in the library's and its functions' names. */
export const libraryVersion = createHash("sha1").update(template).digest("hex").slice(0, 12)
/** The library's source, as FUNCTION LOAD takes it. */
export const librarySource = template.replaceAll("factorial_@", `factorial_${libraryVersion}`)
  .replaceAll("'fx_@_", `'fx_${libraryVersion}_`)

const functionName = (name: FunctionName) => `fx_${libraryVersion}_${name}`
const keyCount = (name: FunctionName) => (name.startsWith("batch_") ? BATCH_SCRIPT_KEYS : TASK_SCRIPT_KEYS)
const isMissing = (e: unknown) => e instanceof Error && e.message.includes("Function not found")

/** The task and batch functions on a connection. */
export interface Scripts {
  /** Calls a function with its keys then its arguments (`keys`: how many; by default the function's fixed count). */
  readonly call: (name: FunctionName, args: ReadonlyArray<string | number>, keys?: number) => Promise<unknown>
  /**
   * Calls several functions in one pipeline (keys of one slot on a Cluster); each reply, or its error, in
   * order. A call that found its function missing is sent again alone, as `call` does.
   */
  readonly callMany: (
    calls: ReadonlyArray<readonly [FunctionName, ReadonlyArray<string | number>]>
  ) => Promise<ReadonlyArray<{ readonly error: Error | null; readonly reply: unknown }>>
}

/** Loads the library on every master now. */
const load = async (conn: RedisConnection): Promise<void> => {
  const masters = conn instanceof Cluster ? conn.nodes("master") : [conn]
  await Promise.all(masters.map((node) =>
    node.call("FUNCTION", "LOAD", "REPLACE", librarySource).catch((e: unknown) => {
      // Redis before 7.0 has no Functions: say what is needed rather than "unknown command".
      if (e instanceof Error && /unknown command/i.test(e.message)) {
        throw new Error(`factorial-ts needs Redis 7.0 or later (Redis Functions): ${e.message}`)
      }
      throw e
    })
  ))
}

const LIBRARY_NAME = /^factorial_[0-9a-f]{12}$/

/** The name of a library in a FUNCTION LIST reply entry (a flat key/value list, or a map under RESP3). */
const libraryName = (entry: unknown): string =>
  Array.isArray(entry) ? String(entry[entry.indexOf("library_name") + 1]) : String((entry as { library_name?: unknown }).library_name)

/**
 * The libraries of other releases of factorial-ts on the server (on any master of a Cluster): each release
 * loads its own and never deletes another's, since processes of two releases share a Redis during a rolling
 * upgrade. Deleting one a running process still uses is harmless: its next call loads it again.
 */
export const otherReleasesLibraries = async (conn: RedisConnection): Promise<ReadonlyArray<string>> => {
  const names = new Set<string>()
  for (const node of conn instanceof Cluster ? conn.nodes("master") : [conn]) {
    const list = (await node.call("FUNCTION", "LIST", "LIBRARYNAME", "factorial_*")) as ReadonlyArray<unknown>
    for (const entry of list) {
      const name = libraryName(entry)
      if (LIBRARY_NAME.test(name) && name !== `factorial_${libraryVersion}`) names.add(name)
    }
  }
  return [...names].sort()
}

/** Deletes libraries on every master that has them. */
export const deleteLibraries = async (conn: RedisConnection, names: ReadonlyArray<string>): Promise<void> => {
  for (const node of conn instanceof Cluster ? conn.nodes("master") : [conn]) {
    for (const name of names) {
      await node.call("FUNCTION", "DELETE", name).catch((e: unknown) => {
        if (!/library not found/i.test(String(e))) throw e
      })
    }
  }
}

/** Loads the library on every master and returns the connection's functions. */
export const installScripts = async (conn: RedisConnection): Promise<Scripts> => {
  await load(conn)
  let reloading: Promise<void> | undefined
  const reload = () => {
    reloading ??= load(conn).finally(() => (reloading = undefined))
    return reloading
  }
  const call: Scripts["call"] = async (name, args, keys = keyCount(name)) => {
    for (let attempt = 1;; attempt++) {
      try {
        return await conn.fcall(functionName(name), keys, ...args)
      } catch (e) {
        // Missing again right after a reload means it was dropped again meanwhile: a few tries, then the error.
        if (!isMissing(e) || attempt === 3) throw e
        await reload()
      }
    }
  }
  return {
    call,
    callMany: async (calls) => {
      const pipeline = conn.pipeline()
      for (const [name, args] of calls) pipeline.fcall(functionName(name), keyCount(name), ...args)
      const replies = (await pipeline.exec()) ?? []
      return Promise.all(replies.map(async ([error, reply], i) =>
        isMissing(error) ? call(...calls[i]!).then((r) => ({ error: null, reply: r }), (e: Error) => ({ error: e, reply: null })) : { error, reply }
      ))
    }
  }
}

export type ScriptReply =
  | { readonly _tag: "ok"; readonly values: ReadonlyArray<unknown> }
  | {
    readonly _tag: "rejected"
    readonly reason: string
    readonly status: TaskStatus | ""
    readonly lease: number
    readonly pending: number
    /** The result id a result rejection is about; "<reason>:<id>" for InvalidWait. */
    readonly detail: string
  }

/** Reads a script's reply tuple. */
export const parseReply = (raw: unknown): ScriptReply => {
  const reply = raw as ReadonlyArray<unknown>
  if (reply[0] === "ok") return { _tag: "ok", values: reply.slice(1) }
  return {
    _tag: "rejected",
    reason: String(reply[1]),
    status: String(reply[2]) as TaskStatus | "",
    lease: Number(reply[3]),
    pending: Number(reply[4]),
    detail: String(reply[5] ?? "")
  }
}
