/**
 * Windows over the metrics timeline, for the dashboard and its API: the window names (`15m`, `1h`, `6h`,
 * `24h`), the range a window covers, stored buckets merged into at most `maxPoints` display points, and a
 * window's totals (counters, throughput, success rate and latency percentiles over the whole window).
 *
 * Merging happens on the stored buckets (counters and histogram bins add field by field), never on derived
 * figures, so a merged point's percentiles are as exact as a single bucket's. Pure: no Redis, no clock.
 */
import { addBuckets, type Bucket, bucketStart, type TimelinePoint, toTimelinePoint } from "./MetricsBuckets.ts"

export const windowSeconds = { "15m": 900, "1h": 3_600, "6h": 21_600, "24h": 86_400 } as const
export type WindowName = keyof typeof windowSeconds
export const windowNames = Object.keys(windowSeconds) as ReadonlyArray<WindowName>

/** The most points a timeline answer holds: longer windows merge neighbouring buckets. */
export const MAX_POINTS = 120

export interface WindowRange {
  /** Range in ms: [from, to). `from` is aligned to the display step, so refreshes give stable points. */
  readonly from: number
  readonly to: number
  /** Stored buckets per display point. */
  readonly step: number
  /** Width of a display point, in seconds. */
  readonly pointSeconds: number
}

/**
 * The range of a window ending now: the display step (how many stored buckets form one point) makes at most
 * `maxPoints` points, and the first point starts on a multiple of the point width.
 */
export const windowRange = (
  window: WindowName,
  bucketSeconds: number,
  now: number,
  maxPoints = MAX_POINTS
): WindowRange => {
  const seconds = windowSeconds[window]
  const buckets = Math.max(1, Math.ceil(seconds / bucketSeconds))
  const step = Math.max(1, Math.ceil(buckets / maxPoints))
  const pointSeconds = step * bucketSeconds
  const lastPoint = bucketStart(pointSeconds, now)
  const points = Math.max(1, Math.ceil(seconds / pointSeconds))
  return { from: (lastPoint - (points - 1) * pointSeconds) * 1000, to: now + 1, step, pointSeconds }
}

/** Stored buckets (in time order, consecutive) merged `step` at a time into display points. */
export const mergePoints = (
  agent: string,
  bucketSeconds: number,
  step: number,
  buckets: ReadonlyArray<{ readonly start: number; readonly bucket: Bucket }>
): ReadonlyArray<TimelinePoint> => {
  const points: Array<TimelinePoint> = []
  for (let i = 0; i < buckets.length; i += step) {
    const group = buckets.slice(i, i + step)
    const merged = group.reduce<Bucket>((sum, b) => addBuckets(sum, b.bucket), {})
    points.push(toTimelinePoint(bucketSeconds * step, agent, group[0]!.start, merged))
  }
  return points
}

/** A window's totals: every bucket added up; throughput is per second over the window's length. */
export const windowTotals = (
  agent: string,
  windowLengthSeconds: number,
  buckets: ReadonlyArray<{ readonly start: number; readonly bucket: Bucket }>
): TimelinePoint => {
  const merged = buckets.reduce<Bucket>((sum, b) => addBuckets(sum, b.bucket), {})
  return toTimelinePoint(windowLengthSeconds, agent, buckets[0]?.start ?? 0, merged)
}
