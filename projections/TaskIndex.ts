/**
 * Tasks by status, newest first, paged: read from the `idx:<status>` sorted sets (task id → the time it
 * entered the status) of every partition, merged by (time desc, id desc). Bounded work per page: at most
 * `limit + 1` index entries per partition and `limit` task hashes, whatever the number of tasks.
 *
 * The cursor is the last returned task's position, `<enteredAt>:<taskId>`; the next page holds the tasks
 * strictly after it in that order. Because equal times are ordered by id, a page boundary inside a run of
 * tasks that entered the status in the same millisecond is exact: a small read-only script finds the
 * position after the cursor by binary search over the equal-score run (ranks are positions, ids compare
 * bytewise), so no task is skipped or repeated while the set is unchanged. Tasks that change status while
 * a client pages may move out of (or into) later pages: the index is live, not a snapshot.
 *
 * Filters (`agent`, `ownerId`) are applied to the page's task hashes, after the page is cut: a filtered
 * page can hold fewer than `limit` tasks (even none) and still have a `nextCursor`.
 */
import { Effect } from "effect"
import { allPartitions, INDEX_ANCHOR, type Keyspace, partitionKeys, taskKeys } from "../streams/Keys.ts"
import { RedisClient, type RedisConnection } from "../streams/RedisClient.ts"
import type { RedisError } from "../streams/StreamError.ts"
import type { TaskStatus } from "../streams/TaskEvent.ts"
import type { IndexedStatus } from "./Gauges.ts"

/** One task of a page: the hash's summary fields (no payload or output). */
export interface TaskSummary {
  readonly id: string
  readonly agent: string
  readonly ownerId: string
  /** The status now (it may have moved on since the index was read). */
  readonly status: TaskStatus
  /** When it entered the listed status (the index score), ms. */
  readonly enteredAt: number
  readonly createdAt: number
  readonly updatedAt: number
  readonly turns: number
  readonly retries: number
  readonly attempts: number
  readonly cancelRequested: boolean
  readonly worker?: string
}

export interface TaskPage {
  readonly tasks: ReadonlyArray<TaskSummary>
  /** Index entries the page covered (before filtering). */
  readonly scanned: number
  /** Pass back as `cursor` for the next page; null when the index has nothing after this page. */
  readonly nextCursor: string | null
}

export interface TaskPageQuery {
  readonly status: IndexedStatus
  readonly limit: number
  readonly cursor?: { readonly enteredAt: number; readonly id: string } | undefined
  readonly agent?: string | undefined
  readonly ownerId?: string | undefined
}

export const formatCursor = (enteredAt: number, id: string): string => `${enteredAt}:${id}`

/** `<ms>:<task id>` → its parts, or undefined when it is not one. */
export const parseTaskCursor = (cursor: string): { enteredAt: number; id: string } | undefined => {
  const m = /^(\d{1,16}):(.+)$/.exec(cursor)
  return m === null ? undefined : { enteredAt: Number(m[1]), id: m[2]! }
}

/**
 * KEYS[1] the index; ARGV[1] cursor score ("" for the first page), ARGV[2] cursor id, ARGV[3] count.
 * Returns up to `count` entries after the cursor in (score desc, member desc) order, WITHSCORES.
 */
const PAGE_SCRIPT = `
local key, score, cid, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local function less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local start = 0
if score ~= '' then
  local lo = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  local hi = lo + redis.call('ZCOUNT', key, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZREVRANGE', key, mid, mid)[1]
    if less(m, cid) then hi = mid else lo = mid + 1 end
  end
  start = lo
end
return redis.call('ZREVRANGE', key, start, start + count - 1, 'WITHSCORES')
`

type PageCaller = (key: string, score: string, id: string, count: number) => Promise<Array<string>>

const pageCaller = (conn: RedisConnection): PageCaller => {
  const c = conn as unknown as Record<string, PageCaller>
  if (c.fx_index_page === undefined) conn.defineCommand("fx_index_page", { numberOfKeys: 1, lua: PAGE_SCRIPT })
  const caller = c.fx_index_page!
  return (...args) => caller.call(conn, ...args)
}

const SUMMARY_FIELDS = [
  "agent",
  "ownerId",
  "status",
  "createdAt",
  "updatedAt",
  "turns",
  "retries",
  "lease",
  "cancel",
  "worker"
] as const

/** Descending by time, then by id (bytewise; task ids are ASCII). */
const newestFirst = (a: { score: number; id: string }, b: { score: number; id: string }) =>
  b.score - a.score || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

export const readTaskPage = (
  keyspace: Keyspace,
  query: TaskPageQuery
): Effect.Effect<TaskPage, RedisError, RedisClient> =>
  Effect.gen(function*() {
    const redis = yield* RedisClient
    const page = pageCaller(redis.conn)
    const entries = yield* redis.use("task index page", async () => {
      const perPartition = await Promise.all(allPartitions(keyspace).map(async (p) => {
        const flat = await page(
          partitionKeys(keyspace, p).index(query.status),
          query.cursor === undefined ? "" : String(query.cursor.enteredAt),
          query.cursor?.id ?? "",
          query.limit + 1
        )
        const out: Array<{ score: number; id: string }> = []
        // The anchor (score -inf) comes last, if at all: nothing follows it, so leaving it out keeps `more` exact.
        for (let i = 0; i + 1 < flat.length; i += 2) {
          if (flat[i] !== INDEX_ANCHOR) out.push({ id: flat[i]!, score: Number(flat[i + 1]) })
        }
        return out
      }))
      return perPartition.flat().sort(newestFirst)
    })
    const pageEntries = entries.slice(0, query.limit)
    const more = entries.length > query.limit
    const last = pageEntries.at(-1)

    const hashes = yield* redis.use("task index hashes", async (c) => {
      const byPartition = new Map<number, Array<number>>()
      pageEntries.forEach((e, i) => {
        const p = taskKeys(keyspace, e.id).partition
        byPartition.set(p, [...(byPartition.get(p) ?? []), i])
      })
      const out = new Array<Array<string | null>>(pageEntries.length)
      await Promise.all([...byPartition.values()].map(async (indexes) => {
        const pipeline = c.pipeline()
        for (const i of indexes) pipeline.hmget(taskKeys(keyspace, pageEntries[i]!.id).task, ...SUMMARY_FIELDS)
        const replies = (await pipeline.exec()) ?? []
        replies.forEach(([err, values], j) => {
          if (err) throw err
          out[indexes[j]!] = values as Array<string | null>
        })
      }))
      return out
    })

    const tasks: Array<TaskSummary> = []
    pageEntries.forEach((e, i) => {
      const v = hashes[i] ?? []
      const field = (name: typeof SUMMARY_FIELDS[number]) => v[SUMMARY_FIELDS.indexOf(name)] ?? undefined
      // The hash is gone when the task expired after the index was read: nothing to show.
      if (field("status") === undefined) return
      const summary: TaskSummary = {
        id: e.id,
        agent: field("agent") ?? "",
        ownerId: field("ownerId") ?? "",
        status: field("status") as TaskStatus,
        enteredAt: e.score,
        createdAt: Number(field("createdAt")),
        updatedAt: Number(field("updatedAt")),
        turns: Number(field("turns") ?? 0),
        retries: Number(field("retries") ?? 0),
        attempts: Number(field("lease") ?? 0),
        cancelRequested: field("cancel") === "1",
        ...(field("worker") !== undefined ? { worker: field("worker")! } : {})
      }
      if (query.agent !== undefined && summary.agent !== query.agent) return
      if (query.ownerId !== undefined && summary.ownerId !== query.ownerId) return
      tasks.push(summary)
    })
    return {
      tasks,
      scanned: pageEntries.length,
      nextCursor: more && last !== undefined ? formatCursor(last.score, last.id) : null
    } satisfies TaskPage
  })
