import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/core/errors.js';
import { WriteLedger, type WriteLimits } from '../../src/cache/write-ledger.js';

const MiB = 1024 * 1024;

function ledger(limits: Partial<WriteLimits> = {}, blobBytes = 0) {
  const blobs = { bytes: blobBytes };
  const l = new WriteLedger(() => blobs.bytes, {
    maxBytes: 100 * MiB,
    maxUploadBytes: 1024 * MiB,
    uploadShare: 0.5,
    maxSessions: 10,
    maxSessionsPerClient: 3,
    uploadTtlMs: 3600_000,
    uploadIdleMs: 60_000,
    ...limits,
  });
  return { l, blobs };
}

async function code(p: Promise<unknown> | (() => unknown)): Promise<string | undefined> {
  try {
    await (typeof p === 'function' ? p() : p);
    return undefined;
  } catch (e) {
    if (e instanceof OciError) return e.code;
    throw e;
  }
}

describe('write ledger: sessions', () => {
  it('caps open sessions per client and in all', async () => {
    const { l } = ledger({ maxSessions: 5, maxSessionsPerClient: 3 });
    for (let i = 0; i < 3; i++) l.open(`a${i}`, 'A');
    expect(await code(() => l.open('a3', 'A'))).toBe('TOOMANYREQUESTS');
    l.open('b0', 'B');
    l.open('b1', 'B');
    expect(await code(() => l.open('c0', 'C'))).toBe('TOOMANYREQUESTS');
    l.close('a0');
    l.open('a3', 'A');
    expect(l.status().sessions).toBe(5);
  });

  it('lets one request at a time hold a session, and frees it when that request ends', async () => {
    const { l } = ledger();
    l.open('s', 'A');
    const first = await l.lock('s', 'worker 1', 0);
    expect(await code(l.lock('s', 'worker 2', 0))).toBe('UPLOAD_OUT_OF_ORDER');
    l.unlock(first, 10);
    const second = await l.lock('s', 'worker 2', 0);
    l.unlock(second, 20);
    expect(l.status().sessionBytes).toBe(20);
    expect(await code(l.lock('gone', 'worker 1', 0))).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('ends the leases of a holder that died and names the sessions it was writing to', async () => {
    const { l } = ledger();
    l.open('s', 'A');
    l.open('t', 'A');
    await l.lock('s', 'worker 1', 5 * MiB);
    await l.reserve('worker 1', 3 * MiB);
    await l.lock('t', 'worker 2', 0);
    expect(l.status().inFlightBytes).toBeGreaterThanOrEqual(8 * MiB);
    expect(l.releaseHolder('worker 1')).toEqual(['s']);
    expect(l.status().inFlightBytes).toBe(0);
    await l.lock('s', 'worker 2', 0); // free again
    l.resize('s', 7);
    expect(l.status().sessionBytes).toBe(7);
  });

  it('expires sessions past their age or idle limit, never one a request holds', async () => {
    const { l } = ledger({ uploadTtlMs: 10_000, uploadIdleMs: 1_000 });
    const now = Date.now();
    l.seed('old', 'A', now - 20_000, now, 0);
    l.seed('idle', 'A', now, now - 2_000, 0);
    l.seed('busy', 'A', now - 20_000, now - 20_000, 0);
    l.seed('fresh', 'A', now, now, 0);
    await l.lock('busy', 'w', 0);
    expect(l.expired(now).sort()).toEqual(['idle', 'old']);
  });
});

describe('write ledger: the budget', () => {
  it('counts blobs, sessions and writes in progress, and refuses what would pass the budget', async () => {
    const { l, blobs } = ledger({ maxBytes: 100 * MiB }, 60 * MiB);
    const lease = await l.reserve('w', 30 * MiB);
    expect(l.usage()).toBeGreaterThanOrEqual(90 * MiB);
    expect(await code(l.reserve('w', 20 * MiB))).toBe('NO_ROOM');
    l.handle({ op: 'release', lease }, 'w');
    blobs.bytes = 0;
    expect(await code(l.reserve('w', 20 * MiB))).toBeUndefined();
  });

  it('asks for room (eviction) before refusing, and admits the write once room was made', async () => {
    const { l, blobs } = ledger({ maxBytes: 100 * MiB }, 95 * MiB);
    const asked: number[] = [];
    l.makeRoom = async (bytes) => {
      asked.push(bytes);
      blobs.bytes = 40 * MiB;
    };
    const lease = await l.reserve('w', 10 * MiB);
    expect(asked).toEqual([10 * MiB]);
    expect(l.usage()).toBeGreaterThanOrEqual(50 * MiB);
    l.handle({ op: 'release', lease }, 'w');
  });

  it('shares one eviction between the writes waiting for room', async () => {
    const { l, blobs } = ledger({ maxBytes: 100 * MiB }, 99 * MiB);
    let runs = 0;
    l.makeRoom = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 20));
      blobs.bytes = 0;
    };
    await Promise.all([l.reserve('a', 10 * MiB), l.reserve('b', 10 * MiB), l.reserve('c', 10 * MiB)]);
    expect(runs).toBe(1);
  });

  it('grows a lease as a chunked body arrives, and stops it at the budget', async () => {
    const { l } = ledger({ maxBytes: 40 * MiB });
    const lease = await l.reserve('w', 0);
    expect(await l.grow(lease, 1)).toBeGreaterThanOrEqual(1); // a slab ahead, when it fits
    expect(await l.grow(lease, 39 * MiB)).toBeGreaterThanOrEqual(39 * MiB);
    expect(l.usage()).toBeLessThanOrEqual(40 * MiB);
    expect(await l.grow(lease, 40 * MiB)).toBe(40 * MiB);
    expect(await code(l.grow(lease, 40 * MiB + 1))).toBe('UPLOAD_TOO_LARGE');
  });

  it('refuses an upload larger than maxUploadBytes or the whole budget with a size error', async () => {
    const { l } = ledger({ maxBytes: 100 * MiB, maxUploadBytes: 10 * MiB });
    expect(await code(l.reserve('w', 11 * MiB))).toBe('UPLOAD_TOO_LARGE');
    l.open('s', 'A');
    const lease = await l.lock('s', 'w', 6 * MiB);
    l.unlock(lease, 6 * MiB);
    // The session already holds 6 MiB: 5 more would make an 11 MiB blob.
    expect(await code(l.lock('s', 'w', 5 * MiB))).toBe('UPLOAD_TOO_LARGE');
    expect(l.usage()).toBe(6 * MiB);
  });

  it('never makes room for sessions beyond their share of the budget', async () => {
    const { l } = ledger({ maxBytes: 64 * MiB, uploadShare: 0.25 });
    let asked = 0;
    l.makeRoom = async () => {
      asked++;
    };
    l.open('s', 'A');
    const lease = await l.lock('s', 'w', 16 * MiB);
    l.unlock(lease, 16 * MiB);
    expect(await code(l.lock('s', 'w', 1))).toBe('NO_ROOM');
    // A monolithic write is not a session: it may still use the rest of the budget.
    expect(await code(l.reserve('w', 40 * MiB))).toBeUndefined();
    expect(asked).toBe(0);
  });

  it('closing a session releases its bytes and the lease of the request completing it', async () => {
    const { l } = ledger();
    l.open('s', 'A');
    const lease = await l.lock('s', 'w', 4 * MiB);
    l.close('s');
    expect(l.status()).toEqual({ sessions: 0, sessionBytes: 0, inFlightBytes: 0 });
    l.unlock(lease, 4 * MiB); // the request's own unlock afterwards changes nothing
    expect(l.usage()).toBe(0);
  });
});
