/**
 * `buildcached verify` (issue 9): a blob file damaged on disk and one that vanished are found, with the manifests
 * that needed them and a tag that points at nothing; `--repair` quarantines the damaged blob and removes what is
 * broken, tags first — through the running daemon (two workers: every process stops serving it) or, with no
 * daemon, under the data-directory lock. The store then passes an independent consistency check.
 */
import { mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup } from '../helpers/daemon.js';
import { sha256 } from '../helpers/registry-client.js';
import { KiB, checkStore, manifestStatus, pullRef, pushRef, randomLayers, runCli, startCache, type CacheDaemon, type PushedRef } from '../helpers/cache-helpers.js';

interface ProblemJson {
  kind: string;
  digest?: string;
  repo?: string;
  tag?: string;
  actual?: string;
  missing?: string[];
  repaired?: boolean;
  movedTo?: string;
}
interface VerifyJson {
  repair: boolean;
  checked: { blobs: number; bytes: number; manifests: number; tags: number };
  problems: ProblemJson[];
  quarantine: string;
}

const blobPath = (dataDir: string, digest: string) => join(dataDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

async function verify(dataDir: string, ...args: string[]): Promise<{ code: number | null; report: VerifyJson; stderr: string }> {
  const r = await runCli(['verify', '--json', '--data', dataDir, ...args], 60_000);
  return { code: r.code, report: JSON.parse(r.stdout) as VerifyJson, stderr: r.stderr };
}

/** Three caches; then on disk: one layer of `a` flipped in place, one layer of `b` deleted, a tag to nowhere. */
async function damage(d: CacheDaemon): Promise<{ a: PushedRef; b: PushedRef; corrupt: string; lost: string; flipped: Buffer }> {
  const a = await pushRef(d.client, 'org/a', 'one', randomLayers([64 * KiB, 10 * KiB]));
  const b = await pushRef(d.client, 'org/b', 'two', randomLayers([32 * KiB]));
  await pushRef(d.client, 'org/c', 'three', randomLayers([16 * KiB]));
  const corrupt = sha256(a.layers[0]!);
  const lost = sha256(b.layers[0]!);
  // Bit rot: same size, different bytes, written in place (no rename, so the daemon's index cannot notice).
  const flipped = Buffer.from(a.layers[0]!);
  flipped[100] = flipped[100]! ^ 0xff;
  const fh = await open(blobPath(d.dataDir, corrupt), 'r+');
  await fh.write(flipped, 0, flipped.length, 0);
  await fh.close();
  await rm(blobPath(d.dataDir, lost));
  await mkdir(join(d.dataDir, 'repositories', 'org', 'gone', '_tags'), { recursive: true });
  await writeFile(join(d.dataDir, 'repositories', 'org', 'gone', '_tags', 'x'), sha256('no such manifest'));
  return { a, b, corrupt, lost, flipped };
}

const kinds = (r: VerifyJson) => r.problems.map((p) => `${p.kind} ${p.repo ? `${p.repo}${p.tag ? `:${p.tag}` : ''} ` : ''}${p.digest ?? ''}`.trim()).sort();

describe('buildcached verify', () => {
  afterEach(cleanup);

  it.each([
    ['through the running daemon (two workers)', true],
    ['on a stopped store, under the lock', false],
  ])('finds a corrupt and a missing blob, their manifests and a dangling tag, and repairs them %s', async (_how, running) => {
    const d = await startCache({ maxBytes: 100 * 1024 * KiB, pushGraceSeconds: 900, workers: 2 });
    const clean = await verify(d.dataDir);
    expect([clean.code, clean.report.problems]).toEqual([0, []]);
    expect(clean.report.checked).toMatchObject({ blobs: 0, manifests: 0, tags: 0 });

    const { a, b, corrupt, lost, flipped } = await damage(d);
    if (!running) expect(await d.stop()).toEqual({ code: 0, signal: null });

    const found = await verify(d.dataDir);
    expect(found.code, found.stderr).toBe(2);
    expect(kinds(found.report)).toEqual(
      [
        `blob-corrupt ${corrupt}`,
        // A stopped store drops a blob whose file is gone when it opens; a running daemon still has it indexed.
        ...(running ? [`blob-missing ${lost}`] : []),
        `manifest-incomplete org/a ${a.digest}`,
        `manifest-incomplete org/b ${b.digest}`,
        `tag-dangling org/gone:x ${sha256('no such manifest')}`,
      ].sort(),
    );
    expect(found.report.problems.find((p) => p.kind === 'blob-corrupt')?.actual).toBe(sha256(flipped));
    expect(found.report.problems.find((p) => p.repo === 'org/a')?.missing).toEqual([corrupt]);
    expect(found.report.problems.find((p) => p.repo === 'org/b')?.missing).toEqual([lost]);
    expect(found.report.checked.manifests).toBe(3);
    expect(found.report.checked.tags).toBe(4);
    // Reporting changes nothing.
    expect((await stat(blobPath(d.dataDir, corrupt))).size).toBe(flipped.length);
    const human = await runCli(['verify', '--data', d.dataDir]);
    expect(human.code).toBe(2);
    expect(human.stdout).toContain(`org/a@${a.digest}`);
    expect(human.stdout).toContain('--repair');

    const repaired = await verify(d.dataDir, '--repair');
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.report.problems.every((p) => p.repaired)).toBe(true);
    const quarantined = join(d.dataDir, 'quarantine', 'blobs', 'sha256', corrupt.slice(7));
    expect(repaired.report.problems.find((p) => p.kind === 'blob-corrupt')?.movedTo).toBe(quarantined);
    expect(await readFile(quarantined)).toEqual(flipped);
    await expect(stat(blobPath(d.dataDir, corrupt))).rejects.toThrow(/ENOENT/);

    const live = running ? d : await startCache({ maxBytes: 100 * 1024 * KiB, pushGraceSeconds: 900, workers: 2, dataDir: d.dataDir });
    // Every worker answers from the repaired state (fresh connections spread over both).
    for (let i = 0; i < 6; i++) {
      expect(await manifestStatus(live.client, 'org/a', 'one')).toBe(404);
      expect(await manifestStatus(live.client, 'org/b', 'two')).toBe(404);
      expect((await live.client.headBlob('org/a', corrupt)).status).toBe(404);
    }
    expect((await pullRef(live.client, 'org/c', 'three')).status).toBe('ok');
    await checkStore(live.dataDir, live.client);
    const again = await verify(live.dataDir);
    expect([again.code, again.report.problems]).toEqual([0, []]);
    // BuildKit's next export pushes the cache again, the damaged layer included.
    await pushRef(live.client, 'org/a', 'one', a.layers);
    expect((await pullRef(live.client, 'org/a', 'one')).status).toBe('ok');
  }, 120_000);
});
