/**
 * The Lua scripts that write task transitions: one `.lua` file per transition in `streams/lua/`, each
 * prefixed with `lib.lua`. They are compiled on every master at start-up (`SCRIPT LOAD`, so a syntax
 * error fails the boot) and called by SHA; ioredis falls back to EVAL on NOSCRIPT (after a Redis restart).
 *
 * Every script returns `{ "ok", ... }` or `{ "rejected", reason, status, lease, pending, detail }`; `parseReply`
 * is the only place that reads that status word.
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import type { TaskStatus } from "./TaskEvent.ts"
import type { RedisConnection } from "./RedisClient.ts"
import { Cluster } from "ioredis"

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
  "settled"
] as const
export type ScriptName = typeof scriptNames[number]

const luaDir = fileURLToPath(new URL("./lua/", import.meta.url))
const readLua = (name: string): string => readFileSync(`${luaDir}${name}.lua`, "utf8")
const lib = readLua("lib")
const ownSources = Object.fromEntries(scriptNames.map((name) => [name, readLua(name)])) as Record<ScriptName, string>

/** The full source of each script: lib.lua, then the script's own file. */
export const scriptSources: Readonly<Record<ScriptName, string>> = Object.fromEntries(
  scriptNames.map((name) => [name, `${lib}\n${ownSources[name]}`])
) as Record<ScriptName, string>

/**
 * The commits a worker sends with its next claim, each also compiled fused with `claimnext` into one script
 * (`<commit>_next`): the commit runs as a function, then the claim, in one call and one atomic step. The
 * commit's arguments come first and `claimnext`'s three (worker, agent, count) last; the reply is
 * `{ <commit's reply>, <claimnext's reply> }`. One script call per turn instead of two: each call costs the
 * Lua around the commands (argument tables, the library's functions) on top of them.
 */
export const fusedCommits = ["checkpoint", "complete", "fail", "release"] as const
export type FusedCommit = typeof fusedCommits[number]

const fusedSources = Object.fromEntries(
  fusedCommits.map((name) => [
    name,
    `${lib}\nlocal function commit()\n${ownSources[name]}\nend\nlocal committed = commit()\n` +
    `local function claim_next()\n${ownSources.claimnext}\nend\nreturn { committed, claim_next() }\n`
  ])
) as Record<FusedCommit, string>

/** Every task script takes the same three keys: task hash, task history, partition log. */
export const TASK_SCRIPT_KEYS = 3

/** The batch scripts (batch_lib.lua, then the script), each with the batch's four keys. */
export const batchScriptNames = ["batch_create", "batch_task_finished", "batch_cancel"] as const
export type BatchScriptName = typeof batchScriptNames[number]
export const BATCH_SCRIPT_KEYS = 4

export const batchScriptSources: Readonly<Record<BatchScriptName, string>> = (() => {
  const batchLib = readLua("batch_lib")
  return Object.fromEntries(batchScriptNames.map((name) => [name, `${batchLib}\n${readLua(name)}`])) as Record<BatchScriptName, string>
})()

type ScriptCaller = (...args: ReadonlyArray<string | number>) => Promise<unknown>

/** A connection with the task and batch scripts defined as commands. */
export type ScriptedConnection =
  & RedisConnection
  & { readonly [K in ScriptName as `fx_${K}`]: ScriptCaller }
  & { readonly [K in FusedCommit as `fx_${K}_next`]: ScriptCaller }
  & { readonly [K in BatchScriptName as `fx_${K}`]: ScriptCaller }

/** Defines the scripts on a connection and compiles them on every master now. */
export const installScripts = async (conn: RedisConnection): Promise<ScriptedConnection> => {
  for (const name of scriptNames) {
    conn.defineCommand(`fx_${name}`, { numberOfKeys: TASK_SCRIPT_KEYS, lua: scriptSources[name] })
  }
  for (const name of fusedCommits) {
    conn.defineCommand(`fx_${name}_next`, { numberOfKeys: TASK_SCRIPT_KEYS, lua: fusedSources[name] })
  }
  for (const name of batchScriptNames) {
    conn.defineCommand(`fx_${name}`, { numberOfKeys: BATCH_SCRIPT_KEYS, lua: batchScriptSources[name] })
  }
  const masters = conn instanceof Cluster ? conn.nodes("master") : [conn]
  const sources = [
    ...scriptNames.map((n) => scriptSources[n]),
    ...fusedCommits.map((n) => fusedSources[n]),
    ...batchScriptNames.map((n) => batchScriptSources[n])
  ]
  await Promise.all(masters.flatMap((node) => sources.map((source) => node.script("LOAD", source))))
  return conn as ScriptedConnection
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
