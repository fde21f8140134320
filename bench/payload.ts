/**
 * The job payload both systems carry: a JSON object of about 100 bytes (or `setPayloadBytes`) whose `i` field
 * identifies the job in the harness (BullMQ assigns its own job ids, so the harness keys every timing by `i`).
 * With `setPayloadGrowth`, a multi-turn task's payload grows by that many bytes per turn, as a conversation does:
 * one more message of that size in `messages`.
 */

export interface BenchPayload {
  readonly i: number
  /** The turn number in the multi-turn scenario (0 elsewhere). */
  readonly turn: number
  readonly pad: string
  /** With `setPayloadGrowth`: one message per turn so far. */
  readonly messages?: ReadonlyArray<string>
}

let pad = "x".repeat(72)
let growth = 0

export const makePayload = (i: number, turn = 0): BenchPayload =>
  growth === 0 || turn === 0 ? { i, turn, pad } : { i, turn, pad, messages: Array.from({ length: turn }, () => "y".repeat(growth - 3)) }

/**
 * Pads every payload made from now on to about `bytes` of JSON (`--payload-bytes`; LLM agents carry
 * conversations of many KB). Below the default size it changes nothing.
 */
export const setPayloadBytes = (bytes: number): void => {
  const base = JSON.stringify(makePayload(12345)).length - pad.length
  pad = "x".repeat(Math.max(72, bytes - base))
}

/** Makes turn `t`'s payload `t × bytes` longer than the first (`--payload-growth`; 0: constant payloads). */
export const setPayloadGrowth = (bytes: number): void => {
  growth = bytes
}

/** The serialized size of a typical payload, for the report. */
export const payloadBytes = (): number => JSON.stringify(makePayload(12345)).length
