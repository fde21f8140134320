/**
 * Small statistics for the harness: percentiles of latency samples (nearest-rank on a sorted copy) and
 * the median of per-repetition results. Every number the report prints comes through here.
 */

/** The p-th percentile (0..100) of the samples, nearest-rank; NaN for no samples. */
export const percentile = (samples: ReadonlyArray<number>, p: number): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

export const median = (values: ReadonlyArray<number>): number => percentile(values, 50)

/** The latency summary printed for each scenario (milliseconds). */
export interface Latency {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly n: number
}

export const summarize = (samples: ReadonlyArray<number>): Latency => ({
  p50: percentile(samples, 50),
  p90: percentile(samples, 90),
  p99: percentile(samples, 99),
  max: samples.length === 0 ? Number.NaN : Math.max(...samples),
  n: samples.length
})

/** The median of each field over repetitions (each field independently, as the report states). */
export const medianLatency = (runs: ReadonlyArray<Latency | undefined>): Latency | undefined => {
  const present = runs.filter((r): r is Latency => r !== undefined)
  if (present.length === 0) return undefined
  return {
    p50: median(present.map((r) => r.p50)),
    p90: median(present.map((r) => r.p90)),
    p99: median(present.map((r) => r.p99)),
    max: median(present.map((r) => r.max)),
    n: median(present.map((r) => r.n))
  }
}
