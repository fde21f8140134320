/**
 * The report's plot: a hand-written SVG of horizontal bars, one per compared metric, showing how many
 * times better ours is than BullMQ on a log scale centred on 1 (right of the line: ours better; left:
 * BullMQ better). Throughput is ours/BullMQ; latency and memory are BullMQ/ours (lower is better there).
 */

export interface Bar {
  readonly label: string
  /** > 1: ours better. */
  readonly factor: number
  /** What the factor is, e.g. "jobs/s ours/BullMQ". */
  readonly note: string
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

export const renderSvg = (bars: ReadonlyArray<Bar>, title: string, subtitle: string): string => {
  const width = 900
  const labelW = 300
  const rowH = 26
  const top = 70
  const plotW = width - labelW - 140
  const height = top + bars.length * rowH + 50
  const maxLog = 3 // 1/8 .. 8
  const x = (f: number) => {
    const l = Math.max(-maxLog, Math.min(maxLog, Math.log2(f)))
    return labelW + ((l + maxLog) / (2 * maxLog)) * plotW
  }
  const x1 = x(1)
  const out: Array<string> = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`)
  out.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`)
  out.push(`<text x="${width / 2}" y="42" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`)
  for (const t of [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]) {
    const tx = x(t)
    out.push(`<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${top + bars.length * rowH}" stroke="${t === 1 ? "#000" : "#ddd"}"/>`)
    out.push(`<text x="${tx}" y="${top + bars.length * rowH + 16}" text-anchor="middle" fill="#555">${t >= 1 ? `×${t}` : `×1/${1 / t}`}</text>`)
  }
  out.push(`<text x="${x(1 / 8)}" y="${top + bars.length * rowH + 34}" fill="#b33">◀ BullMQ better</text>`)
  out.push(`<text x="${x(8)}" y="${top + bars.length * rowH + 34}" text-anchor="end" fill="#2a7">ours better ▶</text>`)
  bars.forEach((b, k) => {
    const y = top + k * rowH
    const bx = x(b.factor)
    const good = b.factor >= 1
    out.push(`<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${esc(b.label)}</text>`)
    out.push(`<rect x="${Math.min(x1, bx)}" y="${y + 4}" width="${Math.max(1, Math.abs(bx - x1))}" height="${rowH - 8}" fill="${good ? "#3a9" : "#d55"}"/>`)
    out.push(`<text x="${width - 130}" y="${y + 16}" fill="#333">×${b.factor.toFixed(2)} <tspan fill="#888">${esc(b.note)}</tspan></text>`)
  })
  out.push(`</svg>`)
  return out.join("\n") + "\n"
}
