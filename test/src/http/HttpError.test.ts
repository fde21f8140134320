/**
 * The error table's one judgement beyond the tag: a RedisError that sending the request again can cure is
 * 503 with Retry-After, one that cannot (the command or script itself fails) is 500. Every other status is
 * met through the routes (ControlRoutes.test.ts, the fault tests).
 */
import { describe, expect, it } from "vitest"
import { httpStatusOf } from "../../../src/http/HttpError.ts"
import { RedisError, type RedisErrorReason } from "../../../streams/StreamError.ts"

const redisError = (reason: RedisErrorReason) => new RedisError({ op: "fcall", reason, message: `${reason} failure` })

describe("httpStatusOf", () => {
  it("answers 503 for a RedisError that a retry can cure, 500 for one it cannot", () => {
    const reasons: ReadonlyArray<RedisErrorReason> = ["Connection", "Timeout", "Unavailable", "Script", "Command"]
    expect(reasons.map((r) => [r, httpStatusOf(redisError(r))])).toEqual([
      ["Connection", 503],
      ["Timeout", 503],
      ["Unavailable", 503],
      ["Script", 500],
      ["Command", 500]
    ])
  })
})
