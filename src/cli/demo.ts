/**
 * The `demo` command: a placeholder until the demo (an agent that needs no API key, and the dashboard)
 * lands. Invariant: `runDemo` is the only export main.ts relies on; it returns an exit code.
 */
import type { Globals } from "./specs.ts"

export const runDemo = async (_options: { readonly args: ReadonlyArray<string>; readonly globals: Globals }): Promise<number> => {
  process.stdout.write("demo: not yet implemented\n")
  return 0
}
