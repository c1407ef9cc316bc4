import type { Status } from '../cache/admin.js';
import type { ReferenceReport } from '../cache/reference-report.js';
import { humanBytes } from '../cli/format.js';

const TOP = 10;

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

/** Disk used against the budget and the high/low watermarks. */
function diskGauge(s: Status): string {
  if (!s.budgetBytes) return `<p>used ${humanBytes(s.bytesUsed)}, no budget</p>`;
  const x = (v: number) => Math.round(Math.min(1, v) * 600);
  const used = s.bytesUsed / s.budgetBytes;
  return `<p>used <b>${humanBytes(s.bytesUsed)}</b> of ${humanBytes(s.budgetBytes)} (${pct(used)}); eviction from ${pct(s.highWatermark)} down to ${pct(s.lowWatermark)}</p>
<svg role="img" aria-label="disk used" width="620" height="30" viewBox="0 0 620 30"><rect class="track" x="0" y="5" width="600" height="20"/><rect x="0" y="5" width="${x(used)}" height="20"/><line x1="${x(s.highWatermark)}" x2="${x(s.highWatermark)}" y1="0" y2="30"/><line x1="${x(s.lowWatermark)}" x2="${x(s.lowWatermark)}" y1="0" y2="30"/></svg>`;
}

/**
 * The status page (GET /admin/ on the admin listener): disk used against the budget, the export hit rate, the top
 * references by size and by bytes saved, recent evictions, the references with warnings. Server-rendered HTML
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
svg rect{fill:#3b7dd8}svg rect.track{fill:#e4e8ee}svg line{stroke:#c33;stroke-width:2}svg text{font-size:12px;fill:#222}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}.none{color:#777}
</style></head><body>
<h1>buildcached</h1>
<h2>Disk</h2>${diskGauge(s)}
<p>${s.blobCount} blobs, ${refs.length} references; evicted since start: ${s.evictions.blobs} blobs, ${humanBytes(s.evictions.bytesReclaimed)} in ${s.evictions.runs} runs</p>
<h2>Export hit rate</h2>
<p>${seen === 0 ? 'no export seen yet' : `<b>${pct(skipped / seen)}</b> of exported blobs were already cached: ${skipped} uploads skipped, ${humanBytes(saved)} saved`}</p>
${bars('Top references by size', bySize.map((r) => ({ label: name(r), value: r.bytes })))}
${bars('Top references by bytes saved', bySaved.map((r) => ({ label: name(r), value: r.savedBytes })))}
<h2>Warnings</h2>${warned.length === 0 ? '<p class="none">none</p>' : `<table><tr><th>reference</th><th>warnings</th></tr>${warned.map((r) => `<tr><td>${name(r)}</td><td>${r.warnings.join(', ')}</td></tr>`).join('')}</table>`}
<h2>Recent evictions</h2>${evictions ? `<table><tr><th>at</th><th>reason</th><th>reclaimed</th><th>removed</th></tr>${evictions}</table>` : '<p class="none">none since start</p>'}
</body></html>
`;
}
