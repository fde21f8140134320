/**
 * BullMQ's side: one `Queue` and (when started) one `Worker` per run, queue name = run id, default job
 * options (jobs are kept after completion, as BullMQ does by default) and default worker settings apart
 * from `concurrency`.
 *
 * Multi-turn continuation, two ways (the report shows both and compares us with the faster one):
 * - "readd": the processor adds the next turn as a new job, then returns (the job completes). One extra
 *   script call per turn, and the completion fetches the next job in the same call. It is what BullMQ
 *   users usually do, and the cheapest durable continuation BullMQ has.
 * - "moveToWait": the job itself goes back to `wait` with its data updated (`updateData`, `moveToWait`,
 *   `throw new WaitingError()`): one job per task like ours, but two calls per turn and no fetch-next.
 */
import { Queue, WaitingError, Worker } from "bullmq"
import type { BenchPayload } from "./payload.ts"
import type { ContinuationMode, OpenOptions, System, SystemRun, TurnHandler } from "./system.ts"

const openBull = (continuation: ContinuationMode) => async (options: OpenOptions): Promise<SystemRun> => {
  const connection = { host: "127.0.0.1", port: options.port }
  const name = options.runId
  const queue = new Queue<BenchPayload>(name, { connection })
  await queue.waitUntilReady()
  let worker: Worker<BenchPayload> | undefined

  return {
    enqueue: async (payload) => {
      await queue.add("noop", payload)
    },
    enqueueBulk: async (payloads) => {
      await queue.addBulk(payloads.map((data) => ({ name: "noop", data })))
    },
    startWorkers: async (concurrency, handler: TurnHandler) => {
      worker = new Worker<BenchPayload>(
        name,
        async (job, token) => {
          const r = handler(job.data)
          if (r._tag === "Done") return { i: job.data.i, done: true }
          if (continuation === "readd") {
            await queue.add("noop", r.payload)
            return { i: job.data.i }
          }
          await job.updateData(r.payload)
          await job.moveToWait(token)
          throw new WaitingError()
        },
        { connection, concurrency }
      )
      worker.on("error", (e) => console.error(`bullmq worker error: ${String(e)}`))
      await worker.waitUntilReady()
    },
    completions: {
      stream: `bull:${name}:events`,
      parse: (fields) => {
        if (fields[1] !== "completed") return undefined
        for (let k = 2; k + 1 < fields.length; k += 2) {
          if (fields[k] === "returnvalue") {
            const v = JSON.parse(fields[k + 1]!) as { i: number; done?: boolean }
            return v.done === true ? v.i : undefined
          }
        }
        return undefined
      }
    },
    keyKind: (key) => key.startsWith(`bull:${name}:`) ? key.replace(/:\d+(?=$|:)/, ":*") : undefined,
    close: async () => {
      await worker?.close()
      await queue.close()
    }
  }
}

export const bullmq: System = { label: "bullmq", side: "bullmq", continuation: "readd", open: openBull("readd") }
export const bullmqMoveToWait: System = {
  label: "bullmq (moveToWait)",
  side: "bullmq",
  continuation: "moveToWait",
  open: openBull("moveToWait")
}
