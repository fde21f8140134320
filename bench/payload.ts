/**
 * The job payload both systems carry: a JSON object of about 100 bytes whose `i` field identifies the
 * job in the harness (BullMQ assigns its own job ids, so the harness keys every timing by `i`).
 */

export interface BenchPayload {
  readonly i: number
  /** The turn number in the multi-turn scenario (0 elsewhere). */
  readonly turn: number
  readonly pad: string
}

const PAD = "x".repeat(72)

export const makePayload = (i: number, turn = 0): BenchPayload => ({ i, turn, pad: PAD })

/** The serialized size of a typical payload, for the report. */
export const payloadBytes = (): number => JSON.stringify(makePayload(12345)).length
