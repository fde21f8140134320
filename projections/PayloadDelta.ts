/**
 * A payload checkpoint told as what changed since the task's previous one (ADR 0018): an agent's payload is
 * mostly its conversation, which grows every turn, and storing every checkpoint whole made a task's history
 * grow with the square of its turns.
 *
 * A delta applies to a payload that is a JSON object and names its fields: `append` what an array field gained at
 * its end (its new elements) or a text field (its new characters), `patch` the delta of a field that is an object
 * before and after (so a conversation kept deeper in the payload grows by its new messages too), `set` a field's
 * new value (or a new field), `unset` a field that is gone. Fields not named are unchanged. Nothing about the
 * payload's schema is assumed.
 *
 * Invariant (test/projections/PayloadDelta.test.ts): for JSON objects `a` and `b`,
 * `applyPayloadDelta(a, payloadDelta(a, b))` equals `b` as JSON, whatever their fields are called
 * (`__proto__` included).
 */

/** What a checkpoint changed in its payload, field by field. */
export interface PayloadDelta {
  readonly append?: Readonly<Record<string, ReadonlyArray<unknown> | string>>
  readonly patch?: Readonly<Record<string, PayloadDelta>>
  readonly set?: Readonly<Record<string, unknown>>
  readonly unset?: ReadonlyArray<string>
}

/**
 * What reading a task's current payload costs: the history entries its claim read (1 for a whole payload: the
 * entry holding it; for a chain, every entry from the whole payload to the last delta) and their length.
 */
export interface PayloadChain {
  readonly entries: number
  readonly length: number
}

/** How deep `patch` nests: an object field deeper than this that changed is `set` whole. */
export const MAX_PATCH_DEPTH = 16

/** The longest chain, in history entries, a checkpoint may extend. */
export const MAX_CHAIN_ENTRIES = 128

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

const own = (o: object, key: string) => Object.prototype.hasOwnProperty.call(o, key)

/** An object JSON writes as its fields (not a Date, a Map or a class with its own `toJSON`). */
const plain = (o: object) => {
  const proto = Object.getPrototypeOf(o)
  return proto === Object.prototype || proto === null
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => isObject(v) && plain(v)

/**
 * Whether two JSON values are equal (objects by their fields, in any order). A value that is not plain JSON
 * (a Date, say) equals nothing: JSON may write it as something else.
 */
export const jsonEqual = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b) || !plain(a) || !plain(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) {
    if (!own(b, k) || !jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  }
  return true
}

/** Whether the array `next` is `prev` followed by zero or more elements. */
const extends_ = (prev: ReadonlyArray<unknown>, next: ReadonlyArray<unknown>) => {
  if (next.length < prev.length) return false
  for (let i = 0; i < prev.length; i++) if (!jsonEqual(prev[i], next[i])) return false
  return true
}

/**
 * What changed from `prev` (a JSON value as `JSON.parse` gives it) to `next` (as JSON will store it: a field
 * whose value is undefined is absent); undefined when either is not a plain object (such a payload is stored
 * whole). Values are compared as they are: one that JSON would write differently (a Date, a nested undefined)
 * never compares equal, so it is `set` and stored as JSON writes it.
 */
export const payloadDelta = (prev: unknown, next: unknown, depth = 0): PayloadDelta | undefined => {
  if (!isPlainObject(prev) || !isPlainObject(next)) return undefined
  const append: Array<[string, ReadonlyArray<unknown> | string]> = []
  const patch: Array<[string, PayloadDelta]> = []
  const set: Array<[string, unknown]> = []
  for (const [k, v] of Object.entries(next)) {
    if (v === undefined) continue
    if (!own(prev, k)) {
      set.push([k, v])
      continue
    }
    const before = prev[k]
    if (Array.isArray(before) && Array.isArray(v) && extends_(before, v)) {
      if (v.length > before.length) append.push([k, v.slice(before.length)])
    } else if (typeof before === "string" && typeof v === "string" && before !== "" && v.startsWith(before)) {
      if (v.length > before.length) append.push([k, v.slice(before.length)])
    } else if (depth < MAX_PATCH_DEPTH && isPlainObject(before) && isPlainObject(v)) {
      const inner = payloadDelta(before, v, depth + 1)!
      if (setsAll(inner, v)) set.push([k, v])
      else if (!isEmpty(inner)) patch.push([k, inner])
    } else if (!jsonEqual(before, v)) set.push([k, v])
  }
  const unset = Object.keys(prev).filter((k) => !own(next, k) || next[k] === undefined)
  return {
    ...(append.length > 0 ? { append: Object.fromEntries(append) } : {}),
    ...(patch.length > 0 ? { patch: Object.fromEntries(patch) } : {}),
    ...(set.length > 0 ? { set: Object.fromEntries(set) } : {}),
    ...(unset.length > 0 ? { unset } : {})
  }
}

const isEmpty = (d: PayloadDelta) => d.append === undefined && d.patch === undefined && d.set === undefined && d.unset === undefined

/** Whether `inner` sets every field of `value` and does nothing else: setting `value` whole says the same, shorter. */
const setsAll = (inner: PayloadDelta, value: Record<string, unknown>) =>
  inner.set !== undefined && inner.append === undefined && inner.patch === undefined &&
  Object.keys(inner.set).length === Object.values(value).filter((v) => v !== undefined).length

/**
 * `prev` with `delta` applied. A field `append` names is taken as empty when it is not an array (for elements)
 * or a text (for characters); a field `patch` names, as an empty object when it is not one.
 */
export const applyPayloadDelta = (prev: unknown, delta: PayloadDelta): unknown => {
  const base = isObject(prev) ? prev : {}
  const unset = new Set(delta.unset ?? [])
  // Built as entries and Object.fromEntries: a field called "__proto__" stays a field.
  const fields = new Map<string, unknown>()
  for (const [k, v] of Object.entries(base)) if (!unset.has(k)) fields.set(k, v)
  for (const [k, added] of Object.entries(delta.append ?? {})) {
    const before = fields.get(k)
    fields.set(
      k,
      typeof added === "string"
        ? (typeof before === "string" ? before : "") + added
        : [...(Array.isArray(before) ? before : []), ...added]
    )
  }
  for (const [k, inner] of Object.entries(delta.patch ?? {})) fields.set(k, applyPayloadDelta(fields.get(k), inner))
  for (const [k, v] of Object.entries(delta.set ?? {})) fields.set(k, v)
  return Object.fromEntries(fields)
}

/**
 * How a worker stores the payload `next` a turn ended with, the task's current payload being `prev` and `chain`
 * what reading it cost (its claim read it): as a delta when the delta is under half the payload's JSON and the
 * chain it extends stays under twice the payload's JSON and MAX_CHAIN_ENTRIES entries; else whole. So a reader
 * never reads more than about twice the payload, and a conversation that only grows is stored in space linear in
 * its length. Undefined: store it whole.
 */
export const checkpointDelta = (prev: unknown, next: unknown, chain: PayloadChain): PayloadDelta | undefined => {
  if (chain.entries >= MAX_CHAIN_ENTRIES) return undefined
  const delta = payloadDelta(prev, next)
  if (delta === undefined) return undefined
  const text = JSON.stringify(next)
  const length = JSON.stringify(delta).length
  return length * 2 < text.length && chain.length + length <= 2 * text.length ? delta : undefined
}
