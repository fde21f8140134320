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
  /** The same, unscoped: returns the function that stops watching (for the per-turn path). */
  readonly watchUnsafe: (taskId: string, onNotice: (notice: ControlNotice) => void) => () => void
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
        const watchUnsafe = (taskId: string, onNotice: (notice: ControlNotice) => void) => {
          const set = watchers.get(taskId) ?? new Set()
          set.add(onNotice)
          watchers.set(taskId, set)
          return () => {
            const current = watchers.get(taskId)
            current?.delete(onNotice)
            if (current?.size === 0) watchers.delete(taskId)
          }
        }
        const watch = (taskId: string, onNotice: (notice: ControlNotice) => void) =>
          Effect.asVoid(Effect.acquireRelease(Effect.sync(() => watchUnsafe(taskId, onNotice)), (unwatch) => Effect.sync(unwatch)))
        return ControlChannel.of({ watch, watchUnsafe })
      })
    )
}
