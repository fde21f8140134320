/**
 * A subscriber's channels restored after a reconnect must not leave an unhandled rejection when that fails:
 * ioredis 6.0.0 sends the restoring SUBSCRIBE with nothing handling its promise, and Node ends a process on an
 * unhandled rejection by default, so a worker process would die of its cancel-notice subscriber when its
 * connection drops again mid-restore. Made to fail deterministically here: the user loses its channel
 * permission, Redis disconnects it, and the restoring SUBSCRIBE gets NOPERM. On a private redis-server.
 */
import { afterAll, expect, it } from "vitest"
import { Redis } from "ioredis"
import { connect, makeConnection } from "../../streams/RedisClient.ts"
import { cleanupAll, sleep, startPrivateRedis, waitFor } from "./harness.ts"

afterAll(() => cleanupAll())

it("a subscription restored after a reconnect that fails leaves no unhandled rejection", async () => {
  const redis = await startPrivateRedis()
  const admin = new Redis(redis.url)
  const unhandled: Array<unknown> = []
  const onUnhandled = (reason: unknown) => void unhandled.push(reason)
  process.on("unhandledRejection", onUnhandled)
  try {
    await admin.call("ACL", "SETUSER", "notices", "on", ">secret", "~*", "&*", "+@all")
    const sub = await connect(makeConnection({ url: `redis://notices:secret@127.0.0.1:${redis.port}` }), "test subscribe")
    await sub.subscribe("control")
    const clientsBefore = await admin.call("CLIENT", "LIST", "TYPE", "pubsub")
    expect(String(clientsBefore)).toContain("user=notices")
    // Redis disconnects the subscriber when its channel permission goes; ioredis reconnects and restores it.
    await admin.call("ACL", "SETUSER", "notices", "resetchannels")
    await waitFor(async () => sub.status, (s) => s === "ready", 5_000, "the subscriber reconnected")
    await sleep(300) // the restoring SUBSCRIBE's NOPERM reply
    expect(unhandled).toEqual([])
    // Our own calls still see the failure.
    await expect(sub.subscribe("control")).rejects.toThrow(/NOPERM/)
    sub.disconnect()
  } finally {
    process.off("unhandledRejection", onUnhandled)
    admin.disconnect()
  }
})
