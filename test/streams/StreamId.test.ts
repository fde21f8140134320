/**
 * compareIds orders stream ids as Redis does (by milliseconds, then sequence, as numbers), with "" first:
 * checked against a BigInt comparison of the parts, on ids whose parts differ in length (where text order
 * is wrong) and on equal ones.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { compareIds } from "../../streams/StreamId.ts"

const reference = (a: string, b: string): number => {
  if (a === "" || b === "") return a === b ? 0 : a === "" ? -1 : 1
  const [am, as] = a.split("-").map(BigInt) as [bigint, bigint]
  const [bm, bs] = b.split("-").map(BigInt) as [bigint, bigint]
  return am !== bm ? (am > bm ? 1 : -1) : as === bs ? 0 : as > bs ? 1 : -1
}

// Milliseconds up to 2^48 (year 10889) and sequences up to 2^40: both exact as doubles.
const part = (max: number) => fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max }))
const id = fc.oneof(
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 9, arbitrary: fc.tuple(part(2 ** 48), part(2 ** 40)).map(([ms, seq]) => `${ms}-${seq}`) }
)

describe("compareIds", () => {
  it("agrees with the numeric order of the parts, \"\" first", () => {
    fc.assert(fc.property(id, id, (a, b) => {
      expect(Math.sign(compareIds(a, b))).toBe(reference(a, b))
      expect(Math.sign(compareIds(b, a))).toBe(reference(b, a))
    }), { numRuns: 2_000 })
  })

  it("is not text order", () => {
    expect(compareIds("9-0", "10-0")).toBe(-1)
    expect(compareIds("5-10", "5-9")).toBe(1)
    expect(compareIds("1700000000000-3", "1700000000000-3")).toBe(0)
  })
})
