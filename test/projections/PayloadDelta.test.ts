/**
 * A payload delta, checked as a property: applied to the payload it was taken from, it gives the new payload
 * (as JSON), for any JSON objects, conversations that grow, and fields named like Object.prototype's; and a
 * worker's choice of delta or whole payload (`checkpointDelta`) never loses a change.
 */
import fc from "fast-check"
import { assert, describe, it } from "vitest"
import {
  applyPayloadDelta,
  checkpointDelta,
  jsonEqual,
  MAX_CHAIN_ENTRIES,
  payloadDelta
} from "../../projections/PayloadDelta.ts"

const key = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom("__proto__", "constructor", "toString", "messages"))
const value = fc.jsonValue({ maxDepth: 2 })
const object = fc.dictionary(key, value, { maxKeys: 6 }).map((o) => JSON.parse(JSON.stringify(o)) as Record<string, unknown>)

/** A payload and a later one: some fields kept, arrays grown at their end, some changed, some dropped, some new. */
const evolution = fc.tuple(object, fc.array(fc.tuple(key, fc.oneof(value, fc.array(value, { maxLength: 3 }))), { maxLength: 4 }), fc.array(key, { maxLength: 2 }))
  .map(([prev, changes, dropped]) => {
    const next = new Map(Object.entries(prev))
    for (const [k, v] of changes) {
      const before = next.get(k)
      next.set(k, Array.isArray(before) && Array.isArray(v) ? [...before, ...v] : v)
    }
    for (const k of dropped) next.delete(k)
    return { prev, next: JSON.parse(JSON.stringify(Object.fromEntries(next))) as Record<string, unknown> }
  })

const same = (a: unknown, b: unknown) => JSON.stringify(a) !== undefined && jsonEqual(JSON.parse(JSON.stringify(a)), b)

describe("PayloadDelta", () => {
  it("applying the delta of two payloads to the first gives the second", () => {
    fc.assert(fc.property(evolution, ({ prev, next }) => {
      const delta = payloadDelta(prev, next)
      assert.isDefined(delta)
      // Through JSON, as the history stores it.
      const stored = JSON.parse(JSON.stringify(delta))
      assert.isTrue(same(applyPayloadDelta(prev, stored), next), JSON.stringify({ prev, next, delta }))
    }), { numRuns: 500 })
  })

  it("a payload as an agent leaves it (undefined fields, Dates, nested undefined) gives what JSON would store", () => {
    const odd = fc.oneof(fc.constant(undefined), fc.date({ noInvalidDate: true }), fc.constant([1, undefined]), fc.constant({ a: undefined }))
    const raw = fc.tuple(evolution, fc.array(fc.tuple(key, odd), { maxLength: 3 })).map(([{ prev, next }, extra]) => {
      const fields = new Map(Object.entries(next))
      for (const [k, v] of extra) fields.set(k, v)
      return { prev, next: Object.fromEntries(fields) }
    })
    fc.assert(fc.property(raw, ({ prev, next }) => {
      const delta = payloadDelta(prev, next)
      assert.isDefined(delta)
      const stored = JSON.parse(JSON.stringify(delta))
      assert.isTrue(same(applyPayloadDelta(prev, stored), JSON.parse(JSON.stringify(next))), JSON.stringify({ prev, next }))
    }), { numRuns: 500 })
  })

  it("a grown conversation is stored as its new messages only", () => {
    const prev = { query: "q", messages: [{ role: "user", content: "a" }], turn: 1 }
    const next = { query: "q", messages: [...prev.messages, { role: "assistant", content: "b" }], turn: 2 }
    assert.deepStrictEqual(payloadDelta(prev, next), {
      append: { messages: [{ role: "assistant", content: "b" }] },
      set: { turn: 2 }
    })
    assert.deepStrictEqual(payloadDelta(next, next), {})
    assert.deepStrictEqual(payloadDelta({ a: [1, 2] }, { a: [2] }), { set: { a: [2] } })
    assert.deepStrictEqual(payloadDelta({ a: 1, b: 2 }, { b: 2 }), { unset: ["a"] })
  })

  it("a field called __proto__ stays a field", () => {
    const prev = JSON.parse('{"__proto__":{"x":1},"a":1}') as Record<string, unknown>
    const next = JSON.parse('{"__proto__":{"x":2},"a":1}') as Record<string, unknown>
    const applied = applyPayloadDelta(prev, JSON.parse(JSON.stringify(payloadDelta(prev, next))))
    assert.strictEqual(Object.getPrototypeOf(applied), Object.prototype)
    assert.deepStrictEqual(Object.getOwnPropertyDescriptor(applied, "__proto__")?.value, { x: 2 })
  })

  it("payloads that are not objects have no delta", () => {
    assert.isUndefined(payloadDelta([1], [1, 2]))
    assert.isUndefined(payloadDelta({ a: 1 }, "text"))
    assert.isUndefined(payloadDelta(null, { a: 1 }))
  })

  it("a worker stores a delta only while it is under half the payload and its chain under twice it; either way the payload survives", () => {
    const chainArb = fc.record({ entries: fc.integer({ min: 1, max: 200 }), length: fc.nat(5_000) })
    fc.assert(fc.property(evolution, chainArb, ({ prev, next }, chain) => {
      const delta = checkpointDelta(prev, next, chain)
      if (delta === undefined) return
      const length = JSON.stringify(delta).length
      const whole = JSON.stringify(next).length
      assert.isBelow(length * 2, whole)
      assert.isAtMost(chain.length + length, 2 * whole)
      assert.isBelow(chain.entries, MAX_CHAIN_ENTRIES)
      assert.isTrue(same(applyPayloadDelta(prev, JSON.parse(JSON.stringify(delta))), next))
    }), { numRuns: 500 })
    const messages = Array.from({ length: 20 }, (_, i) => ({ role: "user", content: `message ${i} `.repeat(5) }))
    const grown = { messages: [...messages, { role: "assistant", content: "ok" }] }
    const size = JSON.stringify(grown).length
    const appended = { append: { messages: [{ role: "assistant", content: "ok" }] } }
    assert.deepStrictEqual(checkpointDelta({ messages }, grown, { entries: 1, length: size }), appended)
    // Too long a chain to read: in bytes (over twice the payload with the delta), or in entries.
    assert.isUndefined(checkpointDelta({ messages }, grown, { entries: 3, length: 2 * size }))
    assert.isUndefined(checkpointDelta({ messages }, grown, { entries: MAX_CHAIN_ENTRIES, length: 0 }))
    // A field whose value is undefined is absent, as in the JSON the history keeps.
    assert.deepStrictEqual(checkpointDelta({ messages, gone: 1 }, { ...grown, gone: undefined }, { entries: 1, length: 0 }), {
      ...appended,
      unset: ["gone"]
    })
    // A delta no smaller than half the payload is not worth a chain.
    assert.isUndefined(checkpointDelta({ a: [] }, { a: ["x".repeat(100)] }, { entries: 1, length: 0 }))
  })
})
