/**
 * Issue 8, items 1, 3, 4, 5 and 7, against the real daemon (two workers unless said otherwise): one writer per
 * upload session across processes, a commit that never takes a file someone still writes to, bounded sessions,
 * and a budget that holds.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, servingPids, sleep } from '../helpers/daemon.js';
import { MiB } from '../helpers/content.js';
import { RegistryClient, request, sha256, streamingRequest, type StreamedResponse } from '../helpers/registry-client.js';
import { checkStore, pullRef, pushRef, randomLayers, startCache, status, type CacheDaemon } from '../helpers/cache-helpers.js';
import { blobTree, budgetedBytes, corruptBlobs } from '../helpers/store.js';

afterEach(cleanup);

const ociCode = (res: StreamedResponse) => (JSON.parse(res.body.toString('utf8')) as { errors: { code: string }[] }).errors[0]!.code;

function expectOci(res: StreamedResponse, status: number, code: string, what: string): void {
  expect(res.status, `${what}: ${res.body.toString().slice(0, 300)}`).toBe(status);
  expect(res.headers['content-type']).toMatch(/json/);
  expect(ociCode(res)).toBe(code);
}

const patch = (location: string, body: Buffer) =>
  request('PATCH', location, { body, headers: { 'Content-Type': 'application/octet-stream' } });

/** Every blob file in the data dir hashes to its name. */
async function expectNoCorruptBlob(dataDir: string): Promise<void> {
  expect(await corruptBlobs(await blobTree(dataDir))).toEqual([]);
}

describe('one writer per upload session, across workers', () => {
  it('refuses a PUT, a second PATCH and a DELETE while a PATCH streams into the session; the blob is exactly its digest', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    // Fresh connections are spread over both workers: several rounds put the writers on different processes.
    for (let round = 0; round < 6; round++) {
      const location = await d.client.startUpload('integ/app');
      const first = randomBytes(1 * MiB);
      expect((await patch(location, first)).status).toBe(202);
      const slow = streamingRequest('PATCH', location, { 'Content-Type': 'application/octet-stream' });
      const more = [randomBytes(64 * 1024), randomBytes(64 * 1024)];
      await slow.write(more[0]!);
      await sleep(150); // the PATCH is now inside the daemon, holding the session

      const put = await request('PUT', RegistryClient.withDigest(location, sha256(first)));
      expectOci(put, 416, 'BLOB_UPLOAD_INVALID', `round ${round}: PUT ?digest= while a PATCH streams`);
      expectOci(await patch(location, Buffer.from('interleaved')), 416, 'BLOB_UPLOAD_INVALID', `round ${round}: a second PATCH`);
      expectOci(await request('DELETE', location), 416, 'BLOB_UPLOAD_INVALID', `round ${round}: DELETE while a PATCH streams`);

      await slow.write(more[1]!);
      slow.end();
      const done = await slow.response;
      expect(done.status).toBe(202);
      expect(done.headers.range).toBe(`0-${1 * MiB + 128 * 1024 - 1}`);
      const all = Buffer.concat([first, ...more]);
      const fin = await request('PUT', RegistryClient.withDigest(location, sha256(all)));
      expect(fin.status, fin.body.toString()).toBe(201);
      const got = await d.client.getBlobDigest('integ/app', sha256(all));
      expect(got.digest).toBe(sha256(all));
    }
    expect(servingPids(d, 'integ/app').size, 'the contending requests reached both workers').toBe(2);
    await expectNoCorruptBlob(d.dataDir);
    // What the disk holds is what a restarted daemon serves: every blob again exactly its digest.
    await d.stop();
    const again = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2, dataDir: d.dataDir, configPath: d.configPath });
    await expectNoCorruptBlob(again.dataDir);
    await checkStore(again.dataDir, again.client);
  });

  it('chunks that take turns between workers make exactly the blob, and a completion with the wrong digest is still refused', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    const chunks = Array.from({ length: 16 }, () => randomBytes(256 * 1024));
    const all = Buffer.concat(chunks);
    // Every request on a fresh connection: a chunk often lands on the other worker than the one before it, which
    // then has no running hash of the session (the completion hashes the file).
    const upload = async () => {
      const location = await d.client.startUpload('integ/turns');
      for (const c of chunks) expect((await patch(location, c)).status).toBe(202);
      return location;
    };
    const wrong = await upload();
    const refused = await request('PUT', RegistryClient.withDigest(wrong, sha256(Buffer.concat([all, Buffer.from('x')]))));
    expectOci(refused, 400, 'DIGEST_INVALID', 'a completion whose digest is not the chunks’');
    const right = await upload();
    const fin = await request('PUT', RegistryClient.withDigest(right, sha256(all)));
    expect(fin.status, fin.body.toString()).toBe(201);
    expect((await d.client.getBlobDigest('integ/turns', sha256(all))).digest).toBe(sha256(all));
    expect(servingPids(d, 'integ/turns').size, 'the chunks reached both workers').toBe(2);
    await expectNoCorruptBlob(d.dataDir);
  });

  it('answers a DELETE of a session whose PUT ?digest= is streaming with 416, not 500; the PUT completes', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    const location = await d.client.startUpload('integ/del');
    const data = randomBytes(2 * MiB);
    const put = streamingRequest('PUT', RegistryClient.withDigest(location, sha256(data)), { 'Content-Type': 'application/octet-stream' });
    await put.write(data.subarray(0, MiB));
    await sleep(150);
    for (let i = 0; i < 4; i++) expectOci(await request('DELETE', location), 416, 'BLOB_UPLOAD_INVALID', 'DELETE during the PUT');
    await put.write(data.subarray(MiB));
    put.end();
    expect((await put.response).status).toBe(201);
    expect((await d.client.getBlobDigest('integ/del', sha256(data))).digest).toBe(sha256(data));
    // Completed: the session is gone.
    expectOci(await request('DELETE', location), 404, 'BLOB_UPLOAD_UNKNOWN', 'DELETE after the PUT');
    expect(servingPids(d, 'integ/del').size, 'the DELETEs and the PUT reached both workers').toBe(2);
    await expectNoCorruptBlob(d.dataDir);
  });
});

/** Sessions opened with the source address `from` (any 127/8 address reaches the daemon on 127.0.0.1). */
function postFrom(d: CacheDaemon, from: string, repo: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: d.port, localAddress: from, method: 'POST', path: `/v2/${repo}/blobs/uploads/`, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('upload sessions cannot starve the cache', () => {
  for (const workers of [1, 2]) {
    it(`caps open sessions per client and in all (429 TOOMANYREQUESTS with Retry-After), workers=${workers}`, async () => {
      const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers, storage: { maxUploadSessions: 12, maxUploadSessionsPerClient: 5 } });
      const mine: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await postFrom(d, '127.0.0.1', 'caps/app');
        expect(r.status).toBe(202);
        mine.push(String(r.headers.location));
      }
      const refused = await postFrom(d, '127.0.0.1', 'caps/app');
      expect(refused.status).toBe(429);
      expect(refused.headers['retry-after']).toBeDefined();
      expect(JSON.parse(refused.body).errors[0].code).toBe('TOOMANYREQUESTS');
      // Another client still gets sessions, up to the total cap.
      for (let i = 0; i < 5; i++) expect((await postFrom(d, '127.0.0.2', 'caps/app')).status).toBe(202);
      expect((await postFrom(d, '127.0.0.3', 'caps/app')).status).toBe(202);
      expect((await postFrom(d, '127.0.0.3', 'caps/app')).status).toBe(202);
      const full = await postFrom(d, '127.0.0.4', 'caps/app');
      expect(full.status).toBe(429);
      // A refused POST leaves nothing on disk: 12 sessions, no more.
      expect((await readdir(join(d.dataDir, 'uploads'))).length).toBe(12);
      // Cancelling a session makes room for its client again.
      expect((await request('DELETE', new URL(mine[0]!, d.url).toString())).status).toBe(204);
      expect((await postFrom(d, '127.0.0.1', 'caps/app')).status).toBe(202);
      expect(servingPids(d, 'caps/app').size, 'sessions were opened through every worker').toBe(workers);
    });
  }

  it('removes a session nobody writes to after uploadIdleTimeout, and its bytes stop counting', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2, storage: { uploadIdleTimeout: '1s' } });
    const location = await d.client.startUpload('idle/app');
    expect((await patch(location, randomBytes(300 * 1024))).status).toBe(202);
    expect((await status(d.url)).uploadBytes).toBeGreaterThanOrEqual(300 * 1024);
    await sleep(2_500);
    expectOci(await request('GET', location), 404, 'BLOB_UPLOAD_UNKNOWN', 'status of an idle session');
    expect((await readdir(join(d.dataDir, 'uploads'))).length).toBe(0);
    expect((await status(d.url)).uploadBytes).toBe(0);
  });

  it('an abandoned upload cannot evict the cache: sessions stop at their share of the budget with 507, every cache survives, pushes go on', async () => {
    const d = await startCache({ maxBytes: '64MiB', pushGraceSeconds: 1, workers: 2, storage: { uploadShare: 0.25 } });
    const refs = [];
    for (let i = 0; i < 20; i++) refs.push(await pushRef(d.client, `starve/r${i}`, 'cache', randomLayers([1 * MiB])));
    await sleep(1_100);
    const location = await d.client.startUpload('starve/abandoned');
    let held = 0;
    let refusal: StreamedResponse | undefined;
    for (let i = 0; i < 10 && !refusal; i++) {
      const r = await patch(location, randomBytes(4 * MiB));
      if (r.status === 202) held += 4 * MiB;
      else refusal = r;
    }
    expect(refusal, 'the session was never refused').toBeDefined();
    expectOci(refusal!, 507, 'UNKNOWN', 'a chunk past the sessions share');
    expect(held).toBeLessThanOrEqual(16 * MiB);
    // Nothing was evicted for it: the 20 caches (~21 MiB) fit the rest of the budget.
    for (const r of refs) expect((await pullRef(d.client, r.repo, r.tag)).status).toBe('ok');
    expect((await status(d.url)).evictions.tags).toBe(0);
    // Pushes still work while the abandoned session sits there.
    expect((await pushRef(d.client, 'starve/after', 'cache', randomLayers([2 * MiB]))).digest).toMatch(/^sha256:/);
    expect(servingPids(d, 'starve/abandoned').size, 'the session was written through both workers').toBe(2);
  });

  it('refuses a blob larger than maxUploadBytes with 413 SIZE_INVALID, whatever the push style, and stores nothing', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2, storage: { maxUploadBytes: '2MiB' } });
    const big = randomBytes(2 * MiB + 1);
    const mono = await request('POST', `${d.url}/v2/big/app/blobs/uploads/?digest=${sha256(big)}`, { body: big, headers: { 'Content-Type': 'application/octet-stream' } });
    expectOci(mono, 413, 'SIZE_INVALID', 'monolithic POST');
    const chunked = await request('POST', `${d.url}/v2/big/app/blobs/uploads/?digest=${sha256(big)}`, { body: big, chunked: true });
    expectOci(chunked, 413, 'SIZE_INVALID', 'monolithic POST, chunked');
    const location = await d.client.startUpload('big/app');
    expect((await patch(location, big.subarray(0, MiB))).status).toBe(202);
    expectOci(await patch(location, big.subarray(MiB)), 413, 'SIZE_INVALID', 'a PATCH past the limit');
    // The session keeps what it had; the refused chunk left nothing.
    expect((await request('GET', location)).headers.range).toBe(`0-${MiB - 1}`);
    expect((await d.client.headBlob('big/app', sha256(big))).status).toBe(404);
    expect((await readdir(join(d.dataDir, 'tmp'))).length).toBe(0);
  });
});

describe('the budget is hard', () => {
  it('9 MiB pushes in a row under a 50 MiB budget never take the disk past 50 MiB, and all succeed', { timeout: 120_000 }, async () => {
    const budget = 50 * MiB;
    // Watermarks high enough that eviction after the fact would let the sixth push overshoot the budget.
    const d = await startCache({ maxBytes: budget, pushGraceSeconds: 1, workers: 2, highWatermark: 0.95, lowWatermark: 0.9 });
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await budgetedBytes(d.dataDir));
        await sleep(5);
      }
    })();
    const styles = ['monolithic-post', 'patch-chunked-te-put', 'post-put', 'patch-chunks-put'] as const;
    for (let i = 0; i < 12; i++) {
      const layer = randomBytes(9 * MiB);
      const res = await d.client.pushBlob(`hard/r${i}`, layer, styles[i % styles.length]!, 2 * MiB);
      expect(res.status, `push ${i}: ${res.body.toString()}`).toBe(201);
      await pushRef(d.client, `hard/r${i}`, 'cache', [layer]);
      await sleep(1_050); // past the grace window: the previous caches may be evicted to make room
    }
    sampling = false;
    await sampler;
    expect(peak).toBeGreaterThan(30 * MiB);
    expect(peak, `peak disk use ${peak} over the ${budget} budget`).toBeLessThanOrEqual(budget);
    expect((await status(d.url)).bytesUsed).toBeLessThanOrEqual(budget);
    expect(servingPids(d, 'hard').size, 'pushes reached both workers').toBe(2);
    await checkStore(d.dataDir, d.client);
  });
});
