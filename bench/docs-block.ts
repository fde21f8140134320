/**
 * Writes one generated block into a markdown file: only the text between `<!-- bench:<name>:begin -->`
 * and `<!-- bench:<name>:end -->` is replaced, so the hand-written text around it and the other
 * harnesses' blocks stay. When the markers are missing, `section(markedBlock)` is appended.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs"

export const writeBlock = (
  file: string,
  name: string,
  content: string,
  section: (markedBlock: string) => string = (markedBlock) => markedBlock
): void => {
  const begin = `<!-- bench:${name}:begin -->`
  const end = `<!-- bench:${name}:end -->`
  const block = `${begin}\n${content}\n${end}`
  const current = existsSync(file) ? readFileSync(file, "utf8") : "# Performance\n"
  const b = current.indexOf(begin)
  const e = current.indexOf(end)
  const next = b >= 0 && e > b
    ? current.slice(0, b) + block + current.slice(e + end.length)
    : `${current.replace(/\n*$/, "\n")}\n${section(block)}\n`
  writeFileSync(file, next)
}
