/**
 * How failures of the Redis client are classified: only what sending again can cure is retryable. The
 * messages are Redis' own replies (and ioredis' connection errors), as the fault tests meet them.
 */
import { describe, expect, it } from "vitest"
import { toRedisError } from "../../streams/StreamError.ts"

const cases: ReadonlyArray<readonly [string, string, boolean]> = [
  ["connect ECONNREFUSED 127.0.0.1:6390", "Connection", true],
  ["Connection is closed.", "Connection", true],
  ["LOADING Redis is loading the dataset in memory", "Connection", true],
  ["CLUSTERDOWN The cluster is down", "Connection", true],
  ["Command timed out", "Timeout", true],
  ["OOM command not allowed when used memory > 'maxmemory'. script: 656c5c0d, on @user_script:62.", "Unavailable", true],
  ["BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", "Unavailable", true],
  ["READONLY You can't write against a read only replica.", "Unavailable", true],
  ["MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "Unavailable", true],
  ["NOREPLICAS Not enough good replicas to write.", "Unavailable", true],
  ["ERR user_script:57: attempt to get length of field '?' (a nil value) script: 656c5c0d", "Script", false],
  ["WRONGTYPE Operation against a key holding the wrong kind of value", "Command", false],
  ["ERR unknown command 'FOO'", "Command", false]
]

describe("toRedisError", () => {
  it.each(cases)("%s → %s (retryable: %s)", (message, reason, retryable) => {
    const e = toRedisError("op", new Error(message))
    expect([e.reason, e.isRetryable]).toEqual([reason, retryable])
  })
})
