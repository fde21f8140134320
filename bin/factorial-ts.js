#!/usr/bin/env node
/**
 * The `factorial-ts` executable (package.json "bin"). In a checkout it runs the TypeScript sources
 * directly (Node 24 strips types), so it never runs a stale build. Installed under node_modules, where
 * Node does not strip types, it runs the build in dist/ (`npm run build`). Invariant: both run the same
 * `runCli` of src/cli/main.ts.
 */
import { existsSync } from "node:fs"
import { sep } from "node:path"
import { fileURLToPath } from "node:url"

const source = new URL("../src/cli/main.ts", import.meta.url)
const built = new URL("../dist/src/cli/main.js", import.meta.url)
const installed = fileURLToPath(import.meta.url).includes(`${sep}node_modules${sep}`)
const entry = (installed || !existsSync(source)) && existsSync(built) ? built : source
const { runCli } = await import(entry.href)
await runCli(process.argv.slice(2))
