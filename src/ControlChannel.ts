/**
 * Cancel and steer notices across processes. The cancel and steer scripts PUBLISH on the namespace's
 * control channel; every worker process subscribes (one dedicated connection) and tells the turn it
 * runs for that task at once. A lost notice is harmless: the next heartbeat reports the cancel too.
 */
import { Context, Effect, Layer, Scope } from "effect"
import { namespaceKeys, type Keyspace } from "../streams/Keys.ts"
import { RedisClient } from "../streams/RedisClient.ts"

export type ControlNotice = { readonly type: "cancel" | "steer"; readonly taskId: string }

export class ControlChannel extends Context.Service<ControlChannel, {
  /** Calls `onNotice` for notices about `taskId` until the scope closes. */
  readonly watch: (taskId: string, onNotice: (notice: ControlNotice) => void) => Effect.Effect<void, never, Scope.Scope>
}>()("factorial/ControlChannel") {
  static readonly layer = (keyspace: Keyspace) =>
    Layer.effect(
      ControlChannel,
      Effect.gen(function*() {
        const redis = yield* RedisClient
        const watchers = new Map<string, Set<(notice: ControlNotice) => void>>()
        const channel = namespaceKeys(keyspace).control
        const sub = yield* redis.dedicated("control subscribe")
        yield* Effect.tryPromise(() => sub.subscribe(channel)).pipe(Effect.orDie)
        sub.on("message", (_channel: string, message: string) => {
          let notice: ControlNotice
          try {
            notice = JSON.parse(message) as ControlNotice
          } catch {
            return
          }
          for (const f of watchers.get(notice.taskId) ?? []) f(notice)
        })
        const watch = (taskId: string, onNotice: (notice: ControlNotice) => void) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              const set = watchers.get(taskId) ?? new Set()
              set.add(onNotice)
              watchers.set(taskId, set)
            }),
            () =>
              Effect.sync(() => {
                const set = watchers.get(taskId)
                set?.delete(onNotice)
                if (set?.size === 0) watchers.delete(taskId)
              })
          )
        return ControlChannel.of({ watch })
      })
    )
}
