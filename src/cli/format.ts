import type { Status } from '../cache/admin.js';
import type { EvictionReport } from '../cache/evictor.js';
import type { ReferenceInfo } from '../cache/inventory.js';
import type { ReferenceReport } from '../cache/reference-report.js';
import type { Problem, VerifyReport } from '../cache/verify.js';
import { hitTotals, type HitSeries } from '../cache/hit-history.js';

export function humanBytes(n: number | null): string {
  if (n === null) return 'unbounded';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n');
}

export function formatReferences(refs: ReferenceInfo[]): string {
  if (refs.length === 0) return 'no cache references';
  const rows = [['REFERENCE', 'SIZE', 'BLOBS', 'LAST USED']];
  for (const r of refs) {
    rows.push([r.tag ? `${r.repo}:${r.tag}` : `${r.repo}@${r.digest.slice(0, 19)}…`, humanBytes(r.bytes), String(r.blobs), r.lastUsed]);
  }
  return table(rows);
}

/** `du`: sizes (own and shared), exports, imports, the uploads the cache saved, warnings. */
export function formatReferenceReports(refs: ReferenceReport[]): string {
  if (refs.length === 0) return 'no cache references';
  const rows = [['REFERENCE', 'SIZE', 'OWN', 'SHARED', 'PUSHES', 'PULLS', 'SKIPPED', 'SAVED', 'SERVED', 'HIT RATE', 'LAST USED', 'WARNINGS']];
  for (const r of refs) {
    rows.push([
      r.tag ? `${r.repo}:${r.tag}` : `${r.repo}@${r.digest.slice(0, 19)}…`,
      humanBytes(r.bytes),
      humanBytes(r.ownBytes),
      humanBytes(r.sharedBytes),
      String(r.pushes),
      String(r.pulls),
      String(r.uploadsSkipped),
      humanBytes(r.savedBytes),
      humanBytes(r.servedBytes),
      r.hitRate === null ? '-' : `${(100 * r.hitRate).toFixed(0)}%`,
      r.lastUsed,
      r.warnings.join(',') || '-',
    ]);
  }
  return table(rows);
}

/** The last day's lookups in a line, for `status` and the status page. */
export function hitLine(s: HitSeries): string {
  const t = hitTotals(s);
  const hours = Math.round(s.windowSeconds / 3600);
  if (t.rate === null) return `no cache lookups in the last ${hours} h`;
  return `${(100 * t.rate).toFixed(1)}% of ${t.hits + t.misses} cache lookups in the last ${hours} h found (${t.hits} hits, ${t.misses} misses; blob HEAD/GET, manifest GET/HEAD)`;
}

export function formatStatus(s: Status): string {
  const pct = s.budgetBytes ? ` (${((100 * s.bytesUsed) / s.budgetBytes).toFixed(1)}% of budget)` : '';
  const lines = [
    `used        ${humanBytes(s.bytesUsed)}${pct}: blobs ${humanBytes(s.blobBytes)}, uploads in progress ${humanBytes(s.uploadBytes)}`,
    `budget      ${humanBytes(s.budgetBytes)}, evict from ${s.highWatermark * 100}% down to ${s.lowWatermark * 100}%`,
    `push grace  ${s.pushGraceSeconds}s`,
    `blobs       ${s.blobCount}`,
    `references  ${s.references.length}`,
    `hit rate    ${hitLine(s.hitRate)}`,
    `evicted     ${s.evictions.tags} tags, ${s.evictions.manifests} manifests, ${s.evictions.blobs} blobs, ${humanBytes(s.evictions.bytesReclaimed)} reclaimed in ${s.evictions.runs} runs since start`,
  ];
  const fallbacks = Object.entries(s.fallbacks);
  if (fallbacks.length) lines.push(`fallbacks   ${fallbacks.map(([repo, n]) => `${repo} ${n}`).join(', ')} (missing tags served by another tag since start)`);
  const t = s.tier;
  if (t) {
    lines.push(
      `S3 tier     ${t.degraded ? 'DEGRADED' : 'ok'}: backlog ${t.backlog}, uploaded ${t.uploaded} (${humanBytes(t.uploadedBytes)}), ${t.failed} failed attempts, ${t.blobs} blobs known there, read through ${humanBytes(t.readThroughBytes)}`,
      ...(t.lastError ? [`last error  ${t.lastErrorAt}: ${t.lastError}`] : []),
    );
  }
  return `${lines.join('\n')}\n\n${formatReferences(s.references)}`;
}

export function formatReport(r: EvictionReport): string {
  const head = r.dryRun
    ? `would remove ${r.steps.length} items, ${humanBytes(r.reclaimedBytes)}`
    : `removed ${r.removed.tags} tags, ${r.removed.manifests} manifests, ${r.removed.blobs} blobs, ${r.removed.uploads} expired uploads; reclaimed ${humanBytes(r.reclaimedBytes)}${r.skipped ? ` (${r.skipped} skipped: used meanwhile)` : ''}`;
  if (!r.dryRun) return head;
  const steps = r.steps.map((s) =>
    s.kind === 'tag' ? `  tag       ${s.repo}:${s.tag}` : s.kind === 'manifest' ? `  manifest  ${s.repo}@${s.digest}` : `  blob      ${s.digest} ${humanBytes(s.size)} (${s.reason})`,
  );
  return [head, ...steps].join('\n');
}

function describeProblem(p: Problem): string {
  switch (p.kind) {
    case 'blob-corrupt':
      return `blob      ${p.digest}: content hashes to ${p.actual}`;
    case 'blob-missing':
      return `blob      ${p.digest}: indexed, but its file is gone`;
    case 'manifest-incomplete':
      return `manifest  ${p.repo}@${p.digest}: needs ${p.missing.join(', ')}, missing or corrupt`;
    case 'record-unreadable':
      return `record    ${p.file}: unreadable`;
    case 'tag-dangling':
      return `tag       ${p.repo}:${p.tag}: points at ${p.digest}, not a manifest of ${p.repo}`;
  }
}

function describeRepair(p: Problem): string {
  if (!p.repaired) return 'left alone: it changed meanwhile; run verify again';
  if (p.movedTo) return `moved to ${p.movedTo}`;
  return p.kind === 'manifest-incomplete' ? 'removed, with its tags' : p.kind === 'blob-missing' ? 'dropped from the index' : 'removed';
}

export function formatVerify(r: VerifyReport): string {
  const c = r.checked;
  const head = `checked ${c.blobs} blobs (${humanBytes(c.bytes)}), ${c.manifests} manifests, ${c.tags} tags: ${r.problems.length ? `${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}` : 'no problems'}`;
  const lines = r.problems.map((p) => `  ${describeProblem(p)}${r.repair ? `\n            → ${describeRepair(p)}` : ''}`);
  if (r.problems.length && !r.repair) lines.push('run `buildcached verify --repair` to remove what is broken (corrupt blobs are moved to DATA/quarantine/)');
  if (r.problems.some((p) => p.movedTo && p.repaired)) lines.push(`look at what is in ${r.quarantine}, then delete it`);
  return [head, ...lines].join('\n');
}
