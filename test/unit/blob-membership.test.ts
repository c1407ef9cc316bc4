/**
 * BlobMembership (src/storage/blob-membership.ts): which repositories have which blobs for tenant isolation — an
 * append log per repository, rows of the digest table in memory. Two instances on one directory stand for two
 * worker processes.
 */
import { createHash } from 'node:crypto';
import { appendFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobMembership, RowSet } from '../../src/storage/blob-membership.js';
import { DigestTable } from '../../src/storage/digest-table.js';
import { Layout } from '../../src/storage/layout.js';

const sha256 = (i: number) => `sha256:${createHash('sha256').update(String(i)).digest('hex')}`;
const sha512 = (i: number) => `sha512:${createHash('sha512').update(String(i)).digest('hex')}`;

let root: string;
let layout: Layout;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'buildcached-members-'));
  layout = new Layout(root);
  await mkdir(layout.tmp, { recursive: true });
});
afterEach(() => rm(root, { recursive: true, force: true }));

/** A process's view: its own digest table, with `present` blobs stored. */
async function processView(present: string[], compact = false) {
  const table = new DigestTable();
  for (const d of present) table.setSize(d, 10);
  const members = new BlobMembership(layout, table);
  await members.open(compact);
  return { table, members };
}

describe('RowSet', () => {
  it('holds exactly what was added, across growth', () => {
    const s = new RowSet();
    for (let i = 0; i < 5000; i += 3) s.add(i);
    s.add(3);
    expect(s.size).toBe(1667);
    for (let i = 0; i < 5000; i++) expect(s.has(i)).toBe(i % 3 === 0);
  });
});

describe('BlobMembership', () => {
  it('a blob added to one repository is not in another, and survives a reopen', async () => {
    const d = sha256(1);
    const { members } = await processView([d]);
    await members.add('b/x', d);
    expect(members.has('b/x', d)).toBe(true);
    expect(await members.lookup('a/y', d)).toBe(false);
    expect(await members.lookup('b', d)).toBe(false);
    expect(await readFile(layout.blobLog('b/x'), 'utf8')).toBe(`${d}\n`);
    await members.add('b/x', d); // already there: no second line
    expect(await readFile(layout.blobLog('b/x'), 'utf8')).toBe(`${d}\n`);

    const again = await processView([d]);
    expect(again.members.has('b/x', d)).toBe(true);
    expect(again.members.has('a/y', d)).toBe(false);
    expect(again.members.pairs).toBe(1);
  });

  it('another process sees an addition on a memory miss (the log tail), with no message between them', async () => {
    const d = sha256(2);
    const e = sha512(2);
    const one = await processView([d, e]);
    const two = await processView([d, e]);
    await one.members.add('b/x', d);
    await one.members.add('b/x', e);
    expect(two.members.has('b/x', d)).toBe(false);
    expect(await two.members.lookup('b/x', d)).toBe(true);
    expect(await two.members.lookup('b/x', e)).toBe(true);
    expect(await two.members.lookup('a/y', d)).toBe(false);
  });

  it('compaction drops blobs no longer stored, repeats and a torn last line; a plain open keeps the log', async () => {
    const kept = sha256(3);
    const gone = sha256(4);
    await mkdir(layout.repository('b/x'), { recursive: true });
    await appendFile(layout.blobLog('b/x'), `${kept}\n${gone}\n${kept}\n${sha256(5).slice(0, 30)}`);
    const worker = await processView([kept]);
    expect(worker.members.has('b/x', kept)).toBe(true);
    const owner = await processView([kept], true);
    expect(owner.members.has('b/x', kept)).toBe(true);
    expect(owner.members.has('b/x', gone)).toBe(false);
    expect(await readFile(layout.blobLog('b/x'), 'utf8')).toBe(`${kept}\n`);
  });

  it('a torn line in the middle costs only itself', async () => {
    const d = sha256(6);
    await mkdir(layout.repository('b/x'), { recursive: true });
    await appendFile(layout.blobLog('b/x'), `${sha256(7).slice(0, 40)}${d}\n`);
    const { members } = await processView([d, sha256(7)]);
    expect(members.has('b/x', d)).toBe(true);
    expect(members.has('b/x', sha256(7))).toBe(false);
  });

  it('a row named by a membership is never reused for another digest, even once its blob is gone', async () => {
    const { table, members } = await processView([sha256(8)]);
    await members.add('b/x', sha256(8));
    const row = table.rowOf(sha256(8));
    table.deleteBlob(sha256(8));
    expect(table.rowOf(sha256(8))).toBe(row);
    for (let i = 100; i < 3000; i++) table.setSize(sha256(i), 1);
    for (let i = 100; i < 3000; i++) expect(table.rowOf(sha256(i))).not.toBe(row);
    expect(members.has('b/x', sha256(8))).toBe(true);
  });
});
