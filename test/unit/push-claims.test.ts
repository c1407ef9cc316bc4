import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClaimBook, CLAIM_LAPSE_MS, ownClaims, pushKey, pushParty } from '../../src/registry/push-claims.js';

const KEY = pushKey('ci/app', `sha256:${'a'.repeat(64)}`);
const JOB = pushParty('10.0.0.1', 'ci/app');
const OTHER_JOB = pushParty('10.0.0.2', 'ci/app');
const READER = pushParty('10.0.0.3', 'ci/app');

/** The verdict of `p` if it settled by now, else 'pending'. */
async function state<T>(p: Promise<T>): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setImmediate(() => r('pending')))]);
}

describe('push claims', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }));
  afterEach(() => vi.useRealTimers());

  it('keys a claim by repository and digest', () => {
    expect(pushKey('a/b', 'sha256:x')).not.toBe(pushKey('a/c', 'sha256:x'));
  });

  it('gives the first miss by a pusher the claim, and holds later misses until its upload ends', async () => {
    const book = new ClaimBook(60_000);
    expect(await book.missed(KEY, JOB, true, 'w1')).toBe('claimed');
    const second = book.missed(KEY, OTHER_JOB, true, 'w2');
    const reader = book.missed(KEY, READER, false, 'w2');
    book.begin('w1 0', KEY, 'w1');
    vi.advanceTimersByTime(CLAIM_LAPSE_MS * 5); // an upload in progress holds the claim past its lapse
    expect(await state(second)).toBe('pending');
    book.end('w1 0');
    expect(await second).toBe('settled');
    expect(await reader).toBe('settled');
    expect(book.size).toBe(0);
  });

  it('claims nothing for a caller that may not push, and nothing for another key', async () => {
    const book = new ClaimBook(60_000);
    expect(await book.missed(KEY, READER, false)).toBe('none');
    expect(await book.missed(KEY, OTHER_JOB, true)).toBe('claimed');
    expect(await book.missed(pushKey('ci/other', `sha256:${'a'.repeat(64)}`), OTHER_JOB, true)).toBe('claimed');
    expect(book.size).toBe(2);
  });

  it('lets a claim that no upload followed lapse, freeing its waiters', async () => {
    const book = new ClaimBook(60_000);
    await book.missed(KEY, JOB, true);
    const waiter = book.missed(KEY, OTHER_JOB, true);
    vi.advanceTimersByTime(CLAIM_LAPSE_MS - 1);
    expect(await state(waiter)).toBe('pending');
    vi.advanceTimersByTime(1);
    expect(await waiter).toBe('settled');
    expect(book.size).toBe(0);
    // The next miss claims afresh.
    expect(await book.missed(KEY, OTHER_JOB, true)).toBe('claimed');
  });

  it('bounds a wait by maxWait, however long the upload takes', async () => {
    const book = new ClaimBook(10_000);
    book.begin('w1 0', KEY, 'w1'); // an upload without a HEAD before it holds a claim too
    const waiter = book.missed(KEY, OTHER_JOB, true);
    vi.advanceTimersByTime(9_999);
    expect(await state(waiter)).toBe('pending');
    vi.advanceTimersByTime(1);
    expect(await waiter).toBe('settled');
    expect(book.size).toBe(1); // the upload still holds it
  });

  it('holds a claim until the last of several uploads of it ends', async () => {
    const book = new ClaimBook(60_000);
    book.begin('w1 0', KEY, 'w1');
    book.begin('w2 0', KEY, 'w2');
    const waiter = book.missed(KEY, OTHER_JOB, true);
    book.end('w1 0');
    expect(await state(waiter)).toBe('pending');
    book.end('w2 0');
    book.end('w2 0'); // ending twice is harmless
    expect(await waiter).toBe('settled');
  });

  it("ends a dead worker's uploads and claims", async () => {
    const book = new ClaimBook(60_000);
    const other = pushKey('ci/app', `sha256:${'b'.repeat(64)}`);
    await book.missed(KEY, JOB, true, 'w1');
    book.begin('w1 0', other, 'w1');
    const waiters = [book.missed(KEY, OTHER_JOB, true, 'w2'), book.missed(other, OTHER_JOB, true, 'w2')];
    book.releaseHolder('w1');
    expect(await Promise.all(waiters)).toEqual(['settled', 'settled']);
    expect(book.size).toBe(0);
  });

  it('serves one process through ownClaims', async () => {
    const claims = ownClaims(new ClaimBook(60_000));
    const done = claims.writing(KEY);
    const waiter = claims.missed(KEY, OTHER_JOB, true);
    expect(await state(waiter)).toBe('pending');
    done();
    expect(await waiter).toBe('settled');
  });

  it("keeps a chunked push's claims while its client starts or writes a session there, then lets them lapse", async () => {
    const book = new ClaimBook(60_000);
    await book.missed(KEY, JOB, true);
    const waiter = book.missed(KEY, OTHER_JOB, true);
    book.hold('p1', JOB); // its POST, then its PATCH: the digest is named only by the PUT that follows
    vi.advanceTimersByTime(CLAIM_LAPSE_MS * 3);
    expect(await state(waiter)).toBe('pending');
    book.hold('p2', OTHER_JOB); // another job's sessions hold nothing of this one's
    book.release('p2');
    book.release('p1');
    vi.advanceTimersByTime(CLAIM_LAPSE_MS - 1);
    expect(await state(waiter)).toBe('pending');
    book.begin('put', KEY); // the completing PUT
    book.end('put');
    expect(await waiter).toBe('settled');
    book.release('p1'); // released twice: harmless
    expect(book.size).toBe(0);
  });

  it('lets an abandoned chunked push lapse once its session work ends, and frees a dead worker’s holds', async () => {
    const book = new ClaimBook(60_000);
    await book.missed(KEY, JOB, true, 'w1');
    const waiter = book.missed(KEY, OTHER_JOB, true, 'w2');
    book.hold('w3 0', JOB, 'w3');
    book.releaseHolder('w3');
    vi.advanceTimersByTime(CLAIM_LAPSE_MS);
    expect(await waiter).toBe('settled');
    expect(book.size).toBe(0);
  });

  it('never holds the claimant on its own claim: its HEAD again (containers/image sends two) is answered at once', async () => {
    const book = new ClaimBook(60_000);
    expect(await book.missed(KEY, JOB, true)).toBe('claimed');
    expect(await book.missed(KEY, JOB, true)).toBe('none');
    expect(await state(book.missed(KEY, OTHER_JOB, true))).toBe('pending');
  });
});
