#!/usr/bin/env node
/**
 * `factorial-ts`, the command line: parses the line (src/cli/args.ts), runs one command
 * (src/cli/commands.ts) and exits with its code: 0 ok, 1 failure or divergence found, 2 bad arguments,
 * 3 not found. Run with Node 24 directly (`node src/cli/main.ts …`) or through the `factorial-ts` bin.
 *
 * Invariant: the process ends with the command's exit code; SIGINT/SIGTERM interrupt the command
 * (connections are closed on the way out) instead of killing it mid-write.
 */
import { readFileSync } from "node:fs"
import { ExitCode, helpText, parseArgs, UsageError } from "./args.ts"
import { commandSpecs, globalFlags, globalsOf } from "./specs.ts"

const program = "factorial-ts"
const about = "event-sourced LLM agent task orchestration on Redis Streams"

/** The package version (from src/cli/, or from dist/src/cli/ after a build). */
const version = (): string => {
  for (const path of ["../../package.json", "../../../package.json"]) {
    try {
      return (JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8")) as { version: string }).version
    } catch {
      // try the next
    }
  }
  return "unknown"
}

const io = { out: process.stdout, err: process.stderr }

export const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  let json = argv.includes("--json")
  try {
    const parsed = parseArgs(argv, commandSpecs, globalFlags)
    json = parsed.flags.json === true
    if (parsed.version) {
      io.out.write(`${program} ${version()}\n`)
      return ExitCode.ok
    }
    if (parsed.help || parsed.command === undefined) {
      io.out.write(helpText(program, about, commandSpecs, globalFlags, parsed.command) + "\n")
      return parsed.help ? ExitCode.ok : ExitCode.usage
    }
    const globals = globalsOf(parsed.flags)
    // The handlers (Effect, ioredis, the library) load only now: help and argument errors stay fast.
    const { commands } = await import("./commands.ts")
    const command = commands.find((c) => c.name === parsed.command!.name)!
    const controller = new AbortController()
    const stop = () => controller.abort()
    // `run` handles its own signals (graceful stop of the orchestrator).
    if (command.name !== "run") {
      process.once("SIGINT", stop)
      process.once("SIGTERM", stop)
    }
    try {
      return await command.run({ args: parsed.args, flags: parsed.flags, globals, io, signal: controller.signal })
    } finally {
      process.off("SIGINT", stop)
      process.off("SIGTERM", stop)
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err.write(`${program}: error: ${e.message}\n`)
      io.err.write(`Run "${program} ${e.command !== undefined ? `${e.command} ` : ""}--help" for usage.\n`)
      if (json) io.out.write(JSON.stringify({ error: { tag: "UsageError", message: e.message } }) + "\n")
      return ExitCode.usage
    }
    const { reportFailure } = await import("./context.ts")
    return reportFailure(io, e, json)
  }
}

/** Runs the command line of this process and ends it with the command's exit code. */
export const runCli = async (argv: ReadonlyArray<string> = process.argv.slice(2)): Promise<void> => {
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0)
  })
  const code = await main(argv)
  process.exitCode = code
  // Whatever still holds the event loop (a client's reconnect timer) must not keep a finished command alive.
  setTimeout(() => process.exit(code), 1_000).unref()
}

if (import.meta.main) await runCli()
