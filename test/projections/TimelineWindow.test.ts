/**
 * The dashboard's windows over the timeline (pure): a window's range is aligned and holds at most
 * MAX_POINTS points, merged points equal the fold of the same samples into one wider bucket (merging
 * stored buckets, never derived figures), and a window's totals add every bucket.
 */
import { describe, expect, it } from "vitest"
import { type Bucket, histogramBin, toTimelinePoint } from "../../projections/MetricsBuckets.ts"
import { MAX_POINTS, mergePoints, windowNames, windowRange, windowSeconds, windowTotals } from "../../projections/TimelineWindow.ts"

const sample = (ms: number): Bucket => ({ "wait.n": 1, "wait.ms": ms, [`wait.h${histogramBin(ms)}`]: 1, completed: 1 })

describe("windowRange", () => {
  it("covers the window in at most MAX_POINTS aligned points, up to now", () => {
    const now = Date.UTC(2025, 0, 1, 12, 34, 56, 789)
    for (const bucketSeconds of [1, 60, 3600]) {
      for (const w of windowNames) {
        const r = windowRange(w, bucketSeconds, now)
        const points = Math.ceil((r.to - r.from) / (r.pointSeconds * 1000))
        expect(points, `${w} of ${bucketSeconds}s`).toBeLessThanOrEqual(MAX_POINTS)
        expect(r.pointSeconds).toBe(r.step * bucketSeconds)
        expect(r.from % (r.pointSeconds * 1000)).toBe(0)
        expect(r.to).toBe(now + 1)
        expect(now - r.from).toBeGreaterThanOrEqual(windowSeconds[w] * 1000 - r.pointSeconds * 1000)
      }
    }
    expect(windowRange("24h", 60, now)).toMatchObject({ step: 12, pointSeconds: 720 })
    expect(windowRange("15m", 60, now)).toMatchObject({ step: 1, pointSeconds: 60 })
  })
})

describe("mergePoints and windowTotals", () => {
  it("merge stored buckets, so percentiles are those of the pooled samples", () => {
    const times = [5, 40, 300, 2_000, 9_000, 25, 700]
    const buckets = times.map((ms, i) => ({ start: 1_000 + 60 * i, bucket: sample(ms) }))
    const points = mergePoints("a", 60, 3, buckets)
    expect(points.map((p) => [p.start, p.end, p.counters.completed])).toEqual([
      [1_000_000, 1_180_000, 3],
      [1_180_000, 1_360_000, 3],
      [1_360_000, 1_540_000, 1]
    ])
    const pooled = [5, 40, 300].map(sample).reduce((a, b) => {
      const out: Record<string, number> = { ...a }
      for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v
      return out
    })
    expect(points[0]).toEqual(toTimelinePoint(180, "a", 1_000, pooled))
    const totals = windowTotals("a", 420, buckets)
    expect(totals.counters.completed).toBe(7)
    expect(totals.throughputPerSecond).toBeCloseTo(7 / 420)
    expect(totals.wait.count).toBe(7)
    expect(totals.wait.totalMs).toBe(times.reduce((a, b) => a + b, 0))
    expect(windowTotals("a", 60, []).counters.completed).toBe(0)
  })
})
