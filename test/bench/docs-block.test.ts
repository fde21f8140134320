/**
 * The bench harnesses share docs/performance.md: each rewrites only its own marked block, so `npm run
 * bench` keeps the cluster bench's block (and the hand-written text) and the other way round.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { writeBlock } from "../../bench/docs-block.ts"

const dir = mkdtempSync(join(tmpdir(), "docs-block-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("writeBlock", () => {
  it("replaces only its own block and appends its section when the markers are missing", () => {
    const file = join(dir, "performance.md")
    writeFileSync(file, "# Performance\n\nintro\n\n<!-- bench:results:begin -->\nold results\n<!-- bench:results:end -->\n\nanalysis\n")
    writeBlock(file, "cluster", "cluster v1", (b) => `## Cluster\n\n${b}\n\ncluster analysis`)
    writeBlock(file, "results", "new results")
    writeBlock(file, "cluster", "cluster v2", () => "never used: the markers exist")
    expect(readFileSync(file, "utf8")).toBe(
      "# Performance\n\nintro\n\n<!-- bench:results:begin -->\nnew results\n<!-- bench:results:end -->\n\nanalysis\n\n" +
        "## Cluster\n\n<!-- bench:cluster:begin -->\ncluster v2\n<!-- bench:cluster:end -->\n\ncluster analysis\n"
    )
  })
})
