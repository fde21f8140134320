/**
 * The command line, parsed by hand: a command name, its positional arguments, and `--flag value`,
 * `--flag=value` or boolean `--flag` anywhere on the line (`--` ends the flags). Also the help text of
 * the program and of each command, built from the same specs.
 *
 * Invariant: a line that does not fit the spec is a `UsageError` (exit code 2) before anything runs;
 * a command's handler only ever sees flags of its spec, with values of the declared kind.
 */

export const ExitCode = { ok: 0, failure: 1, usage: 2, notFound: 3 } as const
export type ExitCode = typeof ExitCode[keyof typeof ExitCode]

export class UsageError extends Error {
  readonly command: string | undefined
  constructor(message: string, command?: string) {
    super(message)
    this.command = command
  }
}

export interface FlagSpec {
  readonly name: string
  readonly kind: "string" | "int" | "boolean"
  readonly description: string
  /** Shown in help, e.g. `<ms|ISO|1h>`. */
  readonly placeholder?: string
  readonly required?: boolean
  readonly choices?: ReadonlyArray<string>
}

export interface ArgSpec {
  readonly name: string
  readonly description: string
  readonly optional?: boolean
}

export interface CommandSpec {
  readonly name: string
  readonly summary: string
  readonly description?: string
  readonly args: ReadonlyArray<ArgSpec>
  readonly flags: ReadonlyArray<FlagSpec>
  readonly examples?: ReadonlyArray<string>
  /** Arguments after the declared ones are passed through (for `demo`). */
  readonly passThrough?: boolean
}

export type FlagValues = Readonly<Record<string, string | number | boolean | undefined>>

export interface Parsed {
  readonly command: CommandSpec | undefined
  readonly args: ReadonlyArray<string>
  readonly flags: FlagValues
  readonly help: boolean
  readonly version: boolean
}

const parseValue = (flag: FlagSpec, raw: string, command: string | undefined): string | number => {
  if (flag.kind === "int") {
    if (!/^-?\d+$/.test(raw)) throw new UsageError(`--${flag.name} expects an integer, got ${JSON.stringify(raw)}`, command)
    return Number(raw)
  }
  if (flag.choices !== undefined && !flag.choices.includes(raw)) {
    throw new UsageError(`--${flag.name} must be one of ${flag.choices.join(", ")}, got ${JSON.stringify(raw)}`, command)
  }
  return raw
}

/** Parses `argv` (without node and the script) against the commands and the global flags. */
export const parseArgs = (
  argv: ReadonlyArray<string>,
  commands: ReadonlyArray<CommandSpec>,
  globalFlags: ReadonlyArray<FlagSpec>
): Parsed => {
  let command: CommandSpec | undefined
  const positional: Array<string> = []
  const flags: Record<string, string | number | boolean> = {}
  let help = false
  let version = false
  let flagsDone = false
  const known = (name: string): FlagSpec | undefined =>
    globalFlags.find((f) => f.name === name) ?? command?.flags.find((f) => f.name === name)

  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!
    if (!flagsDone && token === "--") {
      flagsDone = true
      continue
    }
    if (!flagsDone && (token === "-h" || token === "--help")) {
      help = true
      continue
    }
    if (!flagsDone && token === "--version" && command === undefined) {
      version = true
      continue
    }
    if (!flagsDone && token.startsWith("-") && token !== "-") {
      if (command?.passThrough === true && positional.length >= command.args.length) {
        positional.push(token)
        continue
      }
      const eq = token.indexOf("=")
      const name = token.slice(token.startsWith("--") ? 2 : 1, eq < 0 ? undefined : eq)
      const negated = name.startsWith("no-") && known(name.slice(3))?.kind === "boolean"
      const spec = known(negated ? name.slice(3) : name)
      if (spec === undefined) {
        throw new UsageError(
          command === undefined && argv.slice(i + 1).some((t) => !t.startsWith("-"))
            ? `unknown flag ${token} (command flags go after the command name)`
            : `unknown flag ${token}`,
          command?.name
        )
      }
      if (spec.kind === "boolean") {
        if (eq >= 0) {
          const v = token.slice(eq + 1)
          if (v !== "true" && v !== "false") throw new UsageError(`--${spec.name} is a switch: true or false`, command?.name)
          flags[spec.name] = v === "true"
        } else {
          flags[spec.name] = !negated
        }
        continue
      }
      let raw: string
      if (eq >= 0) raw = token.slice(eq + 1)
      else {
        const next = argv[i + 1]
        if (next === undefined) throw new UsageError(`--${spec.name} needs a value`, command?.name)
        raw = next
        i++
      }
      flags[spec.name] = parseValue(spec, raw, command?.name)
      continue
    }
    if (command === undefined) {
      if (token === "help") {
        help = true
        const target = argv[i + 1]
        if (target !== undefined) {
          command = commands.find((c) => c.name === target)
          if (command === undefined) throw new UsageError(`unknown command ${JSON.stringify(target)}`)
          i++
        }
        continue
      }
      command = commands.find((c) => c.name === token)
      if (command === undefined) throw new UsageError(`unknown command ${JSON.stringify(token)}`)
      continue
    }
    positional.push(token)
  }

  if (!help && !version && command !== undefined) {
    const required = command.args.filter((a) => a.optional !== true).length
    if (positional.length < required) {
      throw new UsageError(`missing argument <${command.args[positional.length]!.name}>`, command.name)
    }
    if (positional.length > command.args.length && command.passThrough !== true) {
      throw new UsageError(`unexpected argument ${JSON.stringify(positional[command.args.length])}`, command.name)
    }
    for (const f of command.flags) {
      if (f.required === true && flags[f.name] === undefined) throw new UsageError(`missing --${f.name}`, command.name)
    }
  }
  return { command, args: positional, flags, help, version }
}

const flagLine = (f: FlagSpec): [string, string] => [
  `--${f.name}${f.kind === "boolean" ? "" : ` ${f.placeholder ?? (f.kind === "int" ? "<n>" : "<value>")}`}`,
  f.description + (f.choices !== undefined ? ` (${f.choices.join(" | ")})` : "") + (f.required === true ? " (required)" : "")
]

const table = (rows: ReadonlyArray<readonly [string, string]>): string => {
  const width = Math.max(0, ...rows.map(([a]) => a.length))
  return rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`).join("\n")
}

/** The help text of the program, or of one command. */
export const helpText = (
  program: string,
  about: string,
  commands: ReadonlyArray<CommandSpec>,
  globalFlags: ReadonlyArray<FlagSpec>,
  command?: CommandSpec
): string => {
  if (command === undefined) {
    return [
      `${program}: ${about}`,
      "",
      `Usage: ${program} [global flags] <command> [arguments] [flags]`,
      "",
      "Commands:",
      table(commands.map((c) => [c.name, c.summary])),
      "",
      "Global flags:",
      table([...globalFlags.map(flagLine), ["-h, --help", "Show help (also: help <command>)"], ["--version", "Show the version"]]),
      "",
      "Exit codes: 0 ok, 1 failure or divergence found, 2 bad arguments, 3 not found.",
      `Run "${program} <command> --help" for a command's flags.`
    ].join("\n")
  }
  const usage = [program, command.name, ...command.args.map((a) => (a.optional === true ? `[${a.name}]` : `<${a.name}>`))]
  if (command.flags.length > 0) usage.push("[flags]")
  return [
    `${program} ${command.name}: ${command.summary}`,
    ...(command.description !== undefined ? ["", command.description] : []),
    "",
    `Usage: ${usage.join(" ")}`,
    ...(command.args.length > 0 ? ["", "Arguments:", table(command.args.map((a) => [a.name, a.description]))] : []),
    ...(command.flags.length > 0 ? ["", "Flags:", table(command.flags.map(flagLine))] : []),
    "",
    "Global flags:",
    table(globalFlags.map(flagLine)),
    ...(command.examples !== undefined && command.examples.length > 0
      ? ["", "Examples:", ...command.examples.map((e) => `  ${e}`)]
      : [])
  ].join("\n")
}

const units: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * A point in time: `now`, milliseconds since the epoch, an ISO 8601 date, or a duration ago
 * (`90s`, `15m`, `2h`, `7d`, `1w`, optionally with a leading `-`).
 */
export const parseTime = (raw: string, now: number, flag: string, command?: string): number => {
  if (raw === "now") return now
  if (/^\d+$/.test(raw)) return Number(raw)
  const rel = /^-?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(raw)
  if (rel !== null) return Math.round(now - Number(rel[1]) * units[rel[2]!]!)
  const t = Date.parse(raw)
  if (Number.isNaN(t)) {
    throw new UsageError(`--${flag}: not a time: ${JSON.stringify(raw)} (use now, epoch ms, ISO 8601, or 2h / 7d ago)`, command)
  }
  return t
}
