/**
 * Push coalescing in one process (push-claims.ts): a HEAD of a blob that another caller claimed (by its own HEAD
 * miss) or is uploading to the same repository waits for that upload and answers from its outcome. Jobs are told
 * apart by address: each "job" here sends from an address of its own in 127.0.0.0/8 (to the registry on 127.0.0.1).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'node:http';
import type { Test } from 'supertest';
import { CLAIM_LAPSE_MS } from '../../src/registry/push-claims.js';
import { authFixture, basic, PASSWORDS, type AuthFixture } from '../helpers/auth-fixture.js';
import { blob, expectOciError, sendBytes, sha256, startRegistry, type TestRegistry } from './harness.js';
import { parseExposition, sampleValue } from '../helpers/prometheus-text.js';

let reg: TestRegistry | undefined;
afterEach(async () => {
  await reg?.close();
  reg = undefined;
});

/** Source addresses: a CI job each. */
const jobs = new Map<number, Agent>();
const job = (n: number): Agent => {
  let a = jobs.get(n);
  if (!a) jobs.set(n, (a = new Agent({ localAddress: `127.0.0.${n}` })));
  return a;
};
afterAll(() => {
  for (const a of jobs.values()) a.destroy();
});

/** A HEAD from job `from` (1 unless said). */
const head = (r: TestRegistry, repo: string, digest: string, opts: { auth?: string; from?: number } = {}): Test => {
  const t = r.http().head(`/v2/${repo}/blobs/${digest}`).agent(job(opts.from ?? 1));
  return opts.auth ? t.set('Authorization', opts.auth) : t;
};
const monolithic = (r: TestRegistry, repo: string, data: Buffer, digest = sha256(data), auth?: string): Test => {
  const t = r.http().post(`/v2/${repo}/blobs/uploads/?digest=${digest}`).set('Content-Type', 'application/octet-stream');
  return sendBytes(auth ? t.set('Authorization', auth) : t, data);
};

/** Resolves with the response and how long it took. */
async function timed(t: Test): Promise<{ status: number; headers: Record<string, string>; ms: number }> {
  const started = performance.now();
  const res = await t;
  return { status: res.status, headers: res.headers as Record<string, string>, ms: performance.now() - started };
}

/** Whether `p` is still pending after `ms`. */
async function pendingAfter(p: Promise<unknown>, ms: number): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, ms));
  return !done;
}

describe('push coalescing', () => {
  it('holds a HEAD that another pusher missed just before until that upload commits, then answers 200', async () => {
    reg = await startRegistry({}, { metrics: true });
    const b = blob(64 * 1024);
    expect((await head(reg, 'ci/app', b.digest)).status).toBe(404); // the first job: claims it
    const waiting = Promise.all([timed(head(reg, 'ci/app', b.digest, { from: 2 })), timed(head(reg, 'ci/app', b.digest, { from: 3 }))]);
    expect(await pendingAfter(waiting, 300)).toBe(true);
    expect((await monolithic(reg, 'ci/app', b.data)).status).toBe(201);
    for (const res of await waiting) {
      expect(res.status).toBe(200);
      expect(res.headers['content-length']).toBe(String(b.data.length));
      expect(res.headers['docker-content-digest']).toBe(b.digest);
    }
    const metrics = parseExposition((await reg.http().get('/metrics')).text);
    expect(sampleValue(metrics, 'buildcached_push_coalesced_total', { outcome: 'found' })).toBe(2);
    expect(sampleValue(metrics, 'buildcached_push_coalesced_total', { outcome: 'missing' })).toBe(0);
  });

  it('never holds a job on its own claim (containers/image HEADs each blob twice), nor a job behind the same address', async () => {
    reg = await startRegistry();
    const d = sha256('asked twice');
    expect((await head(reg, 'ci/app', d)).status).toBe(404);
    const again = await timed(head(reg, 'ci/app', d));
    expect(again.status).toBe(404);
    expect(again.ms).toBeLessThan(CLAIM_LAPSE_MS / 2);
  });

  it('answers a waiting HEAD 404 at once when the upload it waited for is refused, and stores nothing', async () => {
    reg = await startRegistry({}, { metrics: true });
    const b = blob(4096);
    expect((await head(reg, 'ci/app', b.digest)).status).toBe(404);
    const waiting = timed(head(reg, 'ci/app', b.digest, { from: 2 }));
    const refused = await monolithic(reg, 'ci/app', Buffer.concat([b.data, Buffer.from('x')]), b.digest);
    expectOciError(refused, 400, 'DIGEST_INVALID');
    const res = await waiting;
    expect(res.status).toBe(404);
    expect(res.ms).toBeLessThan(CLAIM_LAPSE_MS);
    const metrics = parseExposition((await reg.http().get('/metrics')).text);
    expect(sampleValue(metrics, 'buildcached_push_coalesced_total', { outcome: 'missing' })).toBe(1);
  });

  it('lets a claim that no upload followed lapse: the waiting HEAD then answers 404', async () => {
    reg = await startRegistry();
    const d = sha256('never pushed');
    expect((await head(reg, 'ci/app', d)).status).toBe(404);
    const res = await timed(head(reg, 'ci/app', d, { from: 2 }));
    expect(res.status).toBe(404);
    expect(res.ms).toBeGreaterThanOrEqual(CLAIM_LAPSE_MS - 100);
    // The lapse also ended the claim: this miss claims afresh, so it is answered at once.
    expect((await timed(head(reg, 'ci/app', d, { from: 3 }))).ms).toBeLessThan(CLAIM_LAPSE_MS / 2);
  });

  it('never holds a HEAD in another repository, nor any HEAD with concurrentPushWait: 0', async () => {
    reg = await startRegistry();
    const d = sha256('elsewhere');
    await head(reg, 'ci/app', d);
    const other = await timed(head(reg, 'ci/other', d, { from: 2 })); // claims ci/other
    expect(other.status).toBe(404);
    expect(other.ms).toBeLessThan(CLAIM_LAPSE_MS / 2);
    await reg.close();

    reg = await startRegistry({ registry: { concurrentPushWait: 0 } });
    await head(reg, 'ci/app', d);
    const res = await timed(head(reg, 'ci/app', d, { from: 2 }));
    expect(res.status).toBe(404);
    expect(res.ms).toBeLessThan(CLAIM_LAPSE_MS / 2);
  });

  it('holds a HEAD while a session is being completed with that digest (POST, then PUT ?digest= with the body)', async () => {
    reg = await startRegistry();
    const b = blob(256 * 1024);
    const start = await reg.http().post('/v2/ci/app/blobs/uploads/');
    expect(start.status).toBe(202);
    // No HEAD came first: the completing PUT itself holds the blob for the HEADs that arrive while it streams.
    const put = request(`${reg.url}${start.headers.location}?digest=${b.digest}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': b.data.length },
    });
    const answered = new Promise<number>((resolve, reject) => {
      put.on('response', (res) => resolve(res.resume().statusCode ?? 0));
      put.on('error', reject);
    });
    put.write(b.data.subarray(0, 1024));
    await new Promise((r) => setTimeout(r, 200));
    const waiting = head(reg, 'ci/app', b.digest, { from: 2 }).then((r) => r.status);
    expect(await pendingAfter(waiting, 200)).toBe(true);
    put.end(b.data.subarray(1024));
    expect(await answered).toBe(201);
    expect(await waiting).toBe(200);
  });
});

describe('push coalescing with auth', () => {
  let fx: AuthFixture;
  beforeAll(async () => {
    fx = await authFixture();
  });
  afterAll(async () => {
    await fx?.close();
  });

  it('lets only a caller that may push claim a blob; a reader waits for a pusher’s claim like anyone', async () => {
    reg = await startRegistry({ auth: fx.auth });
    const reader = basic('reader', PASSWORDS.reader);
    const ci = basic('ci', PASSWORDS.ci);
    const b = blob(8192);
    // The reader may pull team/app but not push there: its miss claims nothing, so ci's HEAD is answered at once.
    expect((await head(reg, 'team/app', b.digest, { auth: reader, from: 2 })).status).toBe(404);
    const first = await timed(head(reg, 'team/app', b.digest, { auth: ci }));
    expect(first.status).toBe(404);
    expect(first.ms).toBeLessThan(CLAIM_LAPSE_MS / 2);
    // ci's miss claimed it: the reader's next HEAD waits for ci's upload, and then finds the blob.
    const waiting = timed(head(reg, 'team/app', b.digest, { auth: reader, from: 2 }));
    expect(await pendingAfter(waiting, 200)).toBe(true);
    expect((await monolithic(reg, 'team/app', b.data, b.digest, ci)).status).toBe(201);
    expect((await waiting).status).toBe(200);
  });
});
