import type { Status } from '../cache/admin.js';
import type { HitSeries } from '../cache/hit-history.js';
import type { ReferenceReport } from '../cache/reference-report.js';
import { hitLine, humanBytes } from '../cli/format.js';

const TOP = 10;
/** The hit-rate chart's columns over its window: a day in quarters of an hour. */
const HIT_COLUMNS = 96;

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const name = (r: ReferenceReport) => escape(r.tag !== undefined ? `${r.repo}:${r.tag}` : `${r.repo}@${r.digest.slice(0, 19)}…`);
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Horizontal bars, one per row, scaled to the largest value: an inline SVG, no script, no external request. */
function bars(title: string, rows: Array<{ label: string; value: number }>): string {
  if (rows.length === 0) return `<h2>${title}</h2><p class="none">none yet</p>`;
  const max = Math.max(1, ...rows.map((r) => r.value));
  const h = 22;
  const body = rows
    .map((r, i) => {
      const w = Math.max(1, Math.round((r.value / max) * 300));
      return `<text x="0" y="${i * h + 15}">${r.label}</text><rect x="330" y="${i * h + 4}" width="${w}" height="14"/><text x="${336 + w}" y="${i * h + 15}">${humanBytes(r.value)}</text>`;
    })
    .join('');
  return `<h2>${title}</h2><svg role="img" aria-label="${title}" width="760" height="${rows.length * h}" viewBox="0 0 760 ${rows.length * h}">${body}</svg>`;
}

export interface HitColumn {
  start: number;
  hits: number;
  misses: number;
}

/** The series summed into `n` equal columns over its window, oldest first (start: epoch ms). Pure. */
export function hitColumns(s: HitSeries, n: number): HitColumn[] {
  const windowMs = s.windowSeconds * 1000;
  const from = Date.parse(s.until) - windowMs;
  const span = windowMs / n;
  const columns = Array.from({ length: n }, (_, i): HitColumn => ({ start: from + i * span, hits: 0, misses: 0 }));
  for (const p of s.points) {
    const c = columns[Math.min(n - 1, Math.max(0, Math.floor((Date.parse(p.at) - from) / span)))]!;
    c.hits += p.hits;
    c.misses += p.misses;
  }
  return columns;
}

const clock = (ms: number) => new Date(ms).toISOString().slice(11, 16);

/** One bar per column that saw lookups, as tall as its share found, over a grey track that marks it non-empty. */
function hitChart(s: HitSeries): string {
  const columns = hitColumns(s, HIT_COLUMNS);
  const w = 7;
  const h = 120;
  const left = 40;
  const hours = Math.round(s.windowSeconds / 3600);
  const span = (s.windowSeconds * 1000) / HIT_COLUMNS;
  const body = columns
    .map((c, i) => {
      const n = c.hits + c.misses;
      if (n === 0) return '';
      const x = left + i * w;
      const y = Math.round(h * (1 - c.hits / n));
      return `<g class="point"><title>${clock(c.start)}–${clock(c.start + span)} UTC: ${((100 * c.hits) / n).toFixed(1)}% of ${n} lookups (${c.hits} hits, ${c.misses} misses)</title><rect class="track" x="${x}" y="0" width="${w - 1}" height="${h}"/><rect x="${x}" y="${y}" width="${w - 1}" height="${h - y}"/></g>`;
    })
    .join('');
  const right = left + HIT_COLUMNS * w;
  const axes = `<line class="grid" x1="${left}" x2="${right}" y1="0" y2="0"/><line class="grid" x1="${left}" x2="${right}" y1="${h / 2}" y2="${h / 2}"/><line class="grid" x1="${left}" x2="${right}" y1="${h}" y2="${h}"/><text x="0" y="10">100%</text><text x="0" y="${h / 2 + 4}">50%</text><text x="0" y="${h}">0%</text><text x="${left}" y="${h + 16}">${hours} h ago</text><text x="${right}" y="${h + 16}" text-anchor="end">now (${clock(Date.parse(s.until))} UTC)</text>`;
  return `<svg role="img" aria-label="Hit rate over time" width="${right + 10}" height="${h + 22}" viewBox="0 0 ${right + 10} ${h + 22}">${axes}${body}</svg>`;
}

/** The S3 tier's upload backlog and its failures, when one is configured. */
function tierSection(t: NonNullable<Status['tier']>): string {
  const error = t.lastError ? `${escape(t.lastErrorAt ?? '')}: ${escape(t.lastError)}` : 'none since start';
  return `<h2>S3 tier</h2><p>${t.degraded ? '<b>DEGRADED</b>: the bucket does not answer; local hits and pushes go on, uploads wait' : 'ok'}</p>
<table><tr><th>backlog</th><td>${t.backlog} waiting to upload</td></tr><tr><th>uploaded</th><td>${t.uploaded} (${humanBytes(t.uploadedBytes)}) since start</td></tr><tr><th>failed</th><td>${t.failed} attempts since start</td></tr><tr><th>last error</th><td>${error}</td></tr><tr><th>read through</th><td>${humanBytes(t.readThroughBytes)}</td></tr></table>`;
}

/** Disk used against the budget and the high/low watermarks. */
function diskGauge(s: Status): string {
  if (!s.budgetBytes) return `<p>used ${humanBytes(s.bytesUsed)}, no budget</p>`;
  const x = (v: number) => Math.round(Math.min(1, v) * 600);
  const used = s.bytesUsed / s.budgetBytes;
  return `<p>used <b>${humanBytes(s.bytesUsed)}</b> of ${humanBytes(s.budgetBytes)} (${pct(used)}); eviction from ${pct(s.highWatermark)} down to ${pct(s.lowWatermark)}</p>
<svg role="img" aria-label="disk used" width="620" height="30" viewBox="0 0 620 30"><rect class="track" x="0" y="5" width="600" height="20"/><rect x="0" y="5" width="${x(used)}" height="20"/><line x1="${x(s.highWatermark)}" x2="${x(s.highWatermark)}" y1="0" y2="30"/><line x1="${x(s.lowWatermark)}" x2="${x(s.lowWatermark)}" y1="0" y2="30"/></svg>`;
}

/**
 * The status page (GET /admin/ on the admin listener): disk used against the budget, the hit rate over time and
 * the export hit rate, the top references by size and by bytes saved, the references with warnings, recent
 * evictions, the S3 tier's backlog. Server-rendered HTML
 * with inline SVG: no script, no external resource.
 */
export function renderStatusPage(s: Status, refs: ReferenceReport[]): string {
  const skipped = refs.reduce((n, r) => n + r.uploadsSkipped, 0);
  const seen = skipped + refs.reduce((n, r) => n + r.uploaded, 0);
  const saved = refs.reduce((n, r) => n + r.savedBytes, 0);
  const bySize = [...refs].sort((a, b) => b.bytes - a.bytes).slice(0, TOP);
  const bySaved = refs.filter((r) => r.savedBytes > 0).sort((a, b) => b.savedBytes - a.savedBytes).slice(0, TOP);
  const warned = refs.filter((r) => r.warnings.length > 0);
  const evictions = s.recentEvictions
    .map((e) => `<tr><td>${escape(e.at)}</td><td>${escape(e.reason)}</td><td>${humanBytes(e.reclaimedBytes)}</td><td>${e.removed.tags} tags, ${e.removed.manifests} manifests, ${e.removed.blobs} blobs, ${e.removed.uploads} uploads</td></tr>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>buildcached status</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
svg rect{fill:#3b7dd8}svg rect.track{fill:#e4e8ee}svg line{stroke:#c33;stroke-width:2}svg line.grid{stroke:#ccc;stroke-width:1}svg text{font-size:12px;fill:#222}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}.none{color:#777}
</style></head><body>
<h1>buildcached</h1>
<h2>Disk</h2>${diskGauge(s)}
<p>${s.blobCount} blobs, ${refs.length} references; evicted since start: ${s.evictions.blobs} blobs, ${humanBytes(s.evictions.bytesReclaimed)} in ${s.evictions.runs} runs</p>
<h2>Hit rate over time</h2>
<p>${hitLine(s.hitRate)}</p>
${hitChart(s.hitRate)}
<h2>Export hit rate</h2>
<p>${seen === 0 ? 'no export seen yet' : `<b>${pct(skipped / seen)}</b> of exported blobs were already cached: ${skipped} uploads skipped, ${humanBytes(saved)} saved`}</p>
${bars('Top references by size', bySize.map((r) => ({ label: name(r), value: r.bytes })))}
${bars('Top references by bytes saved', bySaved.map((r) => ({ label: name(r), value: r.savedBytes })))}
<h2>Warnings</h2>${warned.length === 0 ? '<p class="none">none</p>' : `<table><tr><th>reference</th><th>warnings</th></tr>${warned.map((r) => `<tr><td>${name(r)}</td><td>${r.warnings.join(', ')}</td></tr>`).join('')}</table>`}
<h2>Recent evictions</h2>${evictions ? `<table><tr><th>at</th><th>reason</th><th>reclaimed</th><th>removed</th></tr>${evictions}</table>` : '<p class="none">none since start</p>'}
${s.tier ? tierSection(s.tier) : ''}
</body></html>
`;
}
