/**
 * Runs an agent's turns the way the worker does, without Redis: one `runTurn` per round, the payload
 * stored as JSON between turns (encoded and decoded with the agent's schema), `turn` counting the
 * completed turns, steering handed to the turn that picks it up; plus the fake model server as a scoped
 * resource. For agent tests only.
 */
import { Effect } from "effect"
import type { BaseAgent, TurnContext, TurnOutcome } from "../../src/Agent.ts"
import { type FakeModelServer, type Script, startFakeModelServer } from "./FakeModelServer.ts"

/** A fake model server for the test's scope. */
export const fakeModel = (script: Script = []) =>
  Effect.acquireRelease(
    Effect.promise(() => startFakeModelServer(script)),
    (server: FakeModelServer) => Effect.promise(() => server.close())
  )

export interface LiveEvent {
  readonly type: string
  readonly data: unknown
}

/** A turn context with test defaults; `events` collects what the turn emits. */
export const turnContext = <P>(
  agent: BaseAgent<P>,
  payload: P,
  overrides: Partial<Omit<TurnContext<P>, "payload" | "agent">> = {},
  events: Array<LiveEvent> = []
): TurnContext<P> => ({
  taskId: "task-1",
  ownerId: "owner-1",
  agent: agent.name,
  payload,
  turn: 0,
  attempt: 1,
  retries: 0,
  steering: [],
  signal: new AbortController().signal,
  emit: (type, data) => void events.push({ type, data }),
  results: [],
  spawn: () => Promise.reject(new Error("spawn is not available in this test")),
  resultToken: () => "test-token",
  ...overrides
})

/** One turn, whatever the agent returns (Effect or Promise). */
export const runTurn = <P>(agent: BaseAgent<P>, ctx: TurnContext<P>): Effect.Effect<TurnOutcome<P>, unknown> =>
  Effect.suspend(() => {
    const r = agent.runTurn(ctx)
    return Effect.isEffect(r) ? r : Effect.tryPromise({ try: () => r, catch: (e) => e })
  })

/** The payload as the worker stores and reloads it. */
export const storeAndLoad = <P>(agent: BaseAgent<P>, payload: P): Effect.Effect<P, unknown> =>
  Effect.fromResult(agent.encodePayload(payload)).pipe(
    Effect.map((encoded) => JSON.parse(JSON.stringify(encoded)) as unknown),
    Effect.flatMap((stored) => Effect.fromResult(agent.decodePayload(stored)))
  )

export interface Run<P> {
  readonly output: unknown
  /** The payload after each turn (the `Continue` ones, then the `Done` one). */
  readonly payloads: ReadonlyArray<P>
  readonly events: ReadonlyArray<LiveEvent>
}

/** Turns until `Done` (fails on a turn's error, or after `maxRounds`). */
export const runToCompletion = <P>(
  agent: BaseAgent<P>,
  initial: P,
  options: { readonly steering?: Readonly<Record<number, ReadonlyArray<unknown>>>; readonly maxRounds?: number } = {}
): Effect.Effect<Run<P>, unknown> =>
  Effect.gen(function*() {
    const payloads: Array<P> = []
    const events: Array<LiveEvent> = []
    let payload = yield* storeAndLoad(agent, initial)
    for (let turn = 0; turn < (options.maxRounds ?? 20); turn++) {
      const ctx = turnContext(agent, payload, { turn, attempt: turn + 1, steering: options.steering?.[turn] ?? [] }, events)
      const outcome = yield* runTurn(agent, ctx)
      if (outcome._tag === "Done") {
        if (outcome.payload !== undefined) payloads.push(yield* storeAndLoad(agent, outcome.payload))
        return { output: outcome.output, payloads, events }
      }
      if (outcome._tag === "Wait") return yield* Effect.fail(new Error("the turn waits: runToCompletion cannot deliver results"))
      payload = yield* storeAndLoad(agent, outcome.payload)
      payloads.push(payload)
    }
    return yield* Effect.fail(new Error(`no final output after ${options.maxRounds ?? 20} turns`))
  })
