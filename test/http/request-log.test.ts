/**
 * The request log line tells what happened on the wire (issue 9): error bodies count as bytes out, a body the
 * daemon read and refused counts as bytes in, and the code logged is the code the client received.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createApp } from '../../src/http/app.js';
import { openStore } from '../../src/store.js';
import { blob, sha256, waitFor } from './harness.js';

interface Line {
  reqId: string;
  method: string;
  route: string;
  status: number;
  code?: string;
  bytesIn: number;
  bytesOut: number;
}

let dir: string;
let server: Server;
let url: string;
const lines: Line[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildcached-log-'));
  const config = await loadConfig({ env: {}, overrides: { log: { level: 'silent' }, storage: { dir } } });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.includes('"msg":"request"')) lines.push(JSON.parse(l) as Line);
      done();
    },
  });
  const log = pino({ level: 'info' }, sink);
  const { registry } = await openStore(config, pino({ level: 'silent' }));
  server = createServer(createApp(registry, log, { maxManifestBytes: 1024, maxBufferedManifestBytes: config.http.maxBufferedManifestBytes }));
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((ok) => server.close(() => ok()));
  await rm(dir, { recursive: true, force: true });
});

/** The log line of the next request made by `send`. */
async function logged(send: () => PromiseLike<{ status: number; text: string }>): Promise<{ line: Line; status: number; text: string }> {
  const before = lines.length;
  const res = await send();
  await waitFor(async () => lines.length > before, 2000, 'the request log line');
  return { line: lines[before]!, status: res.status, text: res.text };
}

describe('request log', () => {
  it('carries the request id the response echoes: the client\'s, or a generated one', async () => {
    const given = await logged(() => request(url).get('/v2/').set('X-Request-Id', 'build-1234'));
    expect(given.line.reqId).toBe('build-1234');
    let echoed: string | undefined;
    const generated = await logged(async () => {
      const res = await request(url).get('/v2/');
      echoed = res.headers['x-request-id'] as string;
      return res;
    });
    expect(generated.line.reqId).toBe(echoed);
    expect(echoed).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('an error response counts its body as bytes out', async () => {
    const { line, status, text } = await logged(() => request(url).get(`/v2/log/app/blobs/${blob().digest}`));
    expect(status).toBe(404);
    expect(line).toMatchObject({ status: 404, code: 'BLOB_UNKNOWN', bytesIn: 0 });
    expect(line.bytesOut).toBe(Buffer.byteLength(text));
    expect(line.bytesOut).toBeGreaterThan(0);
    const unknown = await logged(() => request(url).get('/nowhere'));
    expect([unknown.status, unknown.line.code, unknown.line.bytesOut]).toEqual([404, 'UNSUPPORTED', Buffer.byteLength(unknown.text)]);
  });

  it('a body refused for its digest counts as bytes in', async () => {
    const { data } = blob(5000);
    const wrong = sha256('something else');
    const { line } = await logged(() => request(url).post(`/v2/log/app/blobs/uploads/?digest=${wrong}`).set('Content-Type', 'application/octet-stream').send(data));
    expect(line).toMatchObject({ status: 400, code: 'DIGEST_INVALID', bytesIn: 5000 });
  });

  it('a manifest over the limit is logged with the code sent, SIZE_INVALID, and the bytes read', async () => {
    const big = 'x'.repeat(3000);
    const { line, text } = await logged(() =>
      request(url).put('/v2/log/app/manifests/latest').set('Content-Type', 'application/vnd.oci.image.manifest.v1+json').send(big),
    );
    expect(JSON.parse(text).errors[0].code).toBe('SIZE_INVALID');
    expect(line).toMatchObject({ status: 413, code: 'SIZE_INVALID', bytesIn: 3000 });
  });

  it('successful uploads count their bodies; a HEAD sends no body', async () => {
    const b = blob(7000);
    const put = await logged(() => request(url).post(`/v2/log/app/blobs/uploads/?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data));
    expect(put.line).toMatchObject({ status: 201, bytesIn: 7000, bytesOut: 0 });
    const head = await logged(() => request(url).head(`/v2/log/app/blobs/${b.digest}`));
    expect(head.line).toMatchObject({ status: 200, bytesIn: 0, bytesOut: 0 });
    const get = await logged(() => request(url).get(`/v2/log/app/blobs/${b.digest}`));
    expect(get.line).toMatchObject({ status: 200, bytesOut: 7000 });
    // A body the route only discards (starting a session) was still read.
    const start = await logged(() => request(url).post('/v2/log/app/blobs/uploads/').set('Content-Type', 'application/octet-stream').send(Buffer.alloc(100)));
    expect(start.line).toMatchObject({ status: 202, bytesIn: 100 });
  });
});
