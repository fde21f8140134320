/**
 * What a growing conversation costs Redis: each turn of a task appends `--growth` bytes (one message) to its
 * payload, as an LLM agent's turn appends to `payload.messages`, for `--turns` turns (several counts).
 * `--shape=nested` keeps the messages one level down (`payload.state.messages`, with a `state.step` counter),
 * `--shape=text` grows a text instead (`payload.transcript`).
 *
 *   node bench/history-growth.ts [--turns=5,10,20,40] [--growth=2000] [--tasks=10] [--list-compress-depth=N] [--deltas]
 *                                [--shape=messages|nested|text]
 *
 * Ours: the task's transitions through `TaskStore` (enqueue, then claim and checkpoint per turn, the last turn
 * completing), so its history keeps every turn's checkpoint; with `--deltas`, each checkpoint as a worker with
 * `checkpointDeltas` sends it (what the turn appended, while the chain is cheap to read; ADR 0018). BullMQ: a job whose data is replaced each turn
 * (`updateData`, as the bench's `moveToWait` variant does; no worker moves it, so only memory compares). Prints,
 * per turn count, the Redis memory of one finished task (its history and hash; the job's hash) next to the final
 * payload's size, and our server CPU per turn. A private Redis (`redis-server.ts`); nothing is asserted and
 * nothing is written to docs. The messages are words drawn from a fixed list (the same text every run), so that
 * `--list-compress-depth` (Redis' LZF compression of a list's inner nodes, set on the private server) compresses
 * them about as much as it would prose, not a run of one letter.
 */
import { Queue } from "bullmq"
import { Effect, Layer, ManagedRuntime } from "effect"
import { checkpointDelta } from "../projections/PayloadDelta.ts"
import type { Checkpoint, TaskCommand } from "../projections/TaskDecider.ts"
import { claimedTask, TaskStore } from "../src/TaskStore.ts"
import { taskKeys } from "../streams/Keys.ts"
import { RedisClient } from "../streams/RedisClient.ts"
import { redisCpuSeconds, startRedis } from "./redis-server.ts"

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const turnCounts = (arg("turns") ?? "5,10,20,40").split(",").map(Number)
const growth = Number(arg("growth") ?? 2000)
const tasks = Number(arg("tasks") ?? 10)
const compressDepth = Number(arg("list-compress-depth") ?? 0)
const deltas = process.argv.includes("--deltas")
const shape = arg("shape") ?? "messages"
if (!["messages", "nested", "text"].includes(shape)) throw new Error("--shape is messages, nested or text")
if (![...turnCounts, growth, tasks].every((n) => Number.isInteger(n) && n >= 1) || !(Number.isInteger(compressDepth) && compressDepth >= 0)) {
  throw new Error("--turns (a list), --growth and --tasks must be positive integers, --list-compress-depth an integer ≥ 0")
}

const WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an they " +
  "you were her she there been one all we their has would when if so no what up can out other into more some time could them " +
  "about than only its two may then do first any my now such like our over man me even most made after also did many before " +
  "must through back years where much your way well down should because each just those people how too little state good very " +
  "make world still own see men work long get here between both life being under never day same another know while last might " +
  "us great old year off come since against go came right used take three tool call result search booking price hotel flight").split(" ")

/** About `bytes` of words, the same for the same `seed` (a linear congruential generator picks them). */
const prose = (seed: number, bytes: number) => {
  let x = seed * 2654435761 % 4294967296
  let text = ""
  while (text.length < bytes) {
    x = (x * 1664525 + 1013904223) % 4294967296
    text += `${WORDS[x % WORDS.length]} `
  }
  return text.slice(0, bytes)
}

/** The payload after `turns` turns: the query and one message (or text) of about `growth` bytes per turn, in `--shape`. */
const conversation = (turns: number) => {
  const messages = Array.from({ length: turns }, (_, i) => ({ role: "assistant", content: prose(i + 1, growth - 30) }))
  return shape === "nested"
    ? { query: "the question", state: { messages, step: turns } }
    : shape === "text"
    ? { query: "the question", transcript: messages.map((m) => `${m.content}\n`).join("") }
    : { query: "the question", messages }
}

const redis = await startRedis()
if (compressDepth > 0) await redis.admin.config("SET", "list-compress-depth", String(compressDepth))
const memoryOf = async (key: string) => Number(await redis.admin.call("MEMORY", "USAGE", key, "SAMPLES", "0"))

const ours = async (turns: number) => {
  const keyspace = { namespace: `growth-${turns}`, partitions: 1 }
  const runtime = ManagedRuntime.make(TaskStore.layer(keyspace).pipe(Layer.provide(RedisClient.layer({ url: redis.url }))))
  const store = await runtime.runPromise(Effect.gen(function*() {
    return yield* TaskStore
  }))
  const run = (command: TaskCommand) => runtime.runPromise(store.execute(command))
  let now = Date.now()
  const cpuBefore = await redisCpuSeconds(redis.admin)
  for (let i = 0; i < tasks; i++) {
    const taskId = `t${i}`
    await run({ _tag: "Enqueue", taskId, agent: "a", ownerId: "o", payload: conversation(0), maxRetries: 1, now: ++now })
    for (let turn = 1; turn <= turns; turn++) {
      const claimed = claimedTask((await run({ _tag: "Claim", taskId, lease: turn - 1, worker: "w", now: ++now })).values)
      const payload = conversation(turn)
      const payloadDelta = deltas ? checkpointDelta(claimed.payload, payload, claimed.payloadChain) : undefined
      const checkpoint: Checkpoint = payloadDelta === undefined ? { payload } : { payloadDelta }
      await run(
        turn < turns
          ? { _tag: "CompleteTurn", taskId, lease: turn, ...checkpoint, steeringApplied: 0, now: ++now }
          : { _tag: "Complete", taskId, lease: turn, output: "done", ...checkpoint, steeringApplied: 0, now: ++now }
      )
    }
  }
  const cpuUs = ((await redisCpuSeconds(redis.admin)) - cpuBefore) * 1e6 / (tasks * turns)
  const k = taskKeys(keyspace, "t0")
  const bytes = (await memoryOf(k.log)) + (await memoryOf(k.task))
  await runtime.dispose()
  return { bytes, cpuUs }
}

const bullmq = async (turns: number) => {
  const queue = new Queue(`growth-${turns}`, { connection: { host: "127.0.0.1", port: redis.port } })
  let first = ""
  for (let i = 0; i < tasks; i++) {
    const job = await queue.add("turns", conversation(0))
    if (i === 0) first = job.id!
    for (let turn = 1; turn <= turns; turn++) await job.updateData(conversation(turn))
  }
  const bytes = await memoryOf(`bull:growth-${turns}:${first}`)
  await queue.close()
  return { bytes }
}

try {
  console.log(
    `each turn appends ~${growth} bytes; ${tasks} tasks per turn count; Redis ${redis.version}, list-compress-depth ${compressDepth}; ` +
      `payload shape ${shape}; our checkpoints ${deltas ? "as deltas (--deltas)" : "whole"}\n`
  )
  console.log("turns  final payload (B)  ours: history+hash (B)  BullMQ: job (B)  ratio  ours: Redis µs per turn")
  for (const turns of turnCounts) {
    const o = await ours(turns)
    const b = await bullmq(turns)
    const final = JSON.stringify(conversation(turns)).length
    console.log(
      `${String(turns).padStart(5)}  ${String(final).padStart(17)}  ${String(o.bytes).padStart(22)}  ${String(b.bytes).padStart(15)}  ` +
        `${(o.bytes / b.bytes).toFixed(1).padStart(4)}×  ${o.cpuUs.toFixed(0).padStart(23)}`
    )
  }
} finally {
  await redis.stop()
}
