/**
 * A payload delta, checked as a property: applied to the payload it was taken from, it gives the new payload
 * (as JSON), for any JSON objects, conversations that grow (at the top level or deeper, by elements or by
 * characters), and fields named like Object.prototype's; and a worker's choice of delta or whole payload
 * (`checkpointDelta`) never loses a change.
 */
import fc from "fast-check"
import { assert, describe, it } from "vitest"
import {
  applyPayloadDelta,
  checkpointDelta,
  jsonEqual,
  MAX_CHAIN_ENTRIES,
  MAX_PATCH_DEPTH,
  payloadDelta
} from "../../projections/PayloadDelta.ts"

const key = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom("__proto__", "constructor", "toString", "messages"))
const value = fc.jsonValue({ maxDepth: 2 })
const object = fc.dictionary(key, value, { maxKeys: 6 }).map((o) => JSON.parse(JSON.stringify(o)) as Record<string, unknown>)

/** Sets a field as an own field (`o[k] = v` would set the prototype of `o` for "__proto__"). */
const put = (o: Record<string, unknown>, k: string, v: unknown) =>
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })

const DROP = Symbol("drop")
/** One change to a payload: at a path of fields, a new value, elements appended, characters appended, or the field dropped. */
const change = fc.tuple(
  fc.array(key, { minLength: 1, maxLength: 3 }),
  fc.oneof(value, fc.array(value, { maxLength: 3 }), fc.string({ maxLength: 4 }).map((text) => ({ text })), fc.constant(DROP))
)

/**
 * A payload and a later one: some fields kept, arrays and texts grown at their end (also in nested objects), some
 * changed, some dropped, some new.
 */
const evolution = fc.tuple(object, fc.array(change, { maxLength: 5 })).map(([prev, changes]) => {
  const next = JSON.parse(JSON.stringify(prev)) as Record<string, unknown>
  for (const [path, c] of changes) {
    let at = next
    for (const k of path.slice(0, -1)) {
      const inner = Object.prototype.hasOwnProperty.call(at, k) ? at[k] : undefined
      if (typeof inner !== "object" || inner === null || Array.isArray(inner)) put(at, k, {})
      at = at[k] as Record<string, unknown>
    }
    const k = path[path.length - 1]!
    const before = Object.prototype.hasOwnProperty.call(at, k) ? at[k] : undefined
    if (c === DROP) delete at[k]
    else if (Array.isArray(c)) put(at, k, Array.isArray(before) ? [...before, ...c] : c)
    else if (typeof c === "object" && c !== null && "text" in c) put(at, k, (typeof before === "string" ? before : "") + c.text)
    else put(at, k, c)
  }
  return { prev, next: JSON.parse(JSON.stringify(next)) as Record<string, unknown> }
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

  it("a conversation kept deeper in the payload, or a text that grows, is stored as what it gained", () => {
    const prev = { state: { messages: [{ role: "user", content: "a" }], step: 1, tools: { search: true } }, notes: "first." }
    const next = {
      state: { messages: [...prev.state.messages, { role: "assistant", content: "b" }], step: 2, tools: { search: true } },
      notes: "first. second."
    }
    const delta = payloadDelta(prev, next)
    assert.deepStrictEqual(delta, {
      append: { notes: " second." },
      patch: { state: { append: { messages: [{ role: "assistant", content: "b" }] }, set: { step: 2 } } }
    })
    assert.deepStrictEqual(applyPayloadDelta(prev, JSON.parse(JSON.stringify(delta))), next)
    // An object field changed in every field is set whole; an unchanged one is not named; an empty text is set.
    assert.deepStrictEqual(payloadDelta({ o: { a: 1, b: 2 } }, { o: { a: 2, b: 3 } }), { set: { o: { a: 2, b: 3 } } })
    assert.deepStrictEqual(payloadDelta({ o: { a: [1] }, s: "x" }, { o: { a: [1] }, s: "x" }), {})
    assert.deepStrictEqual(payloadDelta({ s: "" }, { s: "ab" }), { set: { s: "ab" } })
    // A text that does not start with the old one, or an object that became something else, is set.
    assert.deepStrictEqual(payloadDelta({ s: "ab", o: { a: 1 } }, { s: "b", o: [1] }), { set: { s: "b", o: [1] } })
    // Patches nest MAX_PATCH_DEPTH deep; below that a changed object is set whole.
    const deep = (n: number, leaf: unknown): unknown => n === 0 ? leaf : { d: deep(n - 1, leaf), k: 0 }
    const depthOf = (d: unknown): number => {
      const inner = (d as { patch?: { d?: unknown } }).patch?.d
      return inner === undefined ? 0 : 1 + depthOf(inner)
    }
    const deepDelta = payloadDelta(deep(40, [1]), deep(40, [1, 2]))
    assert.strictEqual(depthOf(deepDelta), MAX_PATCH_DEPTH)
    assert.deepStrictEqual(applyPayloadDelta(deep(40, [1]), JSON.parse(JSON.stringify(deepDelta))), deep(40, [1, 2]))
    // A Date or a class instance inside is not a plain object: set, as JSON writes it.
    const at = new Date(0)
    assert.deepStrictEqual(payloadDelta({ o: { a: 1 } }, { o: at }), { set: { o: at } })
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
    // A conversation one level down grows by its new messages too.
    const nested = checkpointDelta({ state: { messages } }, { state: grown }, { entries: 1, length: size })
    assert.deepStrictEqual(nested, { patch: { state: appended } })
    // A delta no smaller than half the payload is not worth a chain.
    assert.isUndefined(checkpointDelta({ a: [] }, { a: ["x".repeat(100)] }, { entries: 1, length: 0 }))
  })
})
