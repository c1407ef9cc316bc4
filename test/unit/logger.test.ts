import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** What the logger writes to a file descriptor for one record. */
async function written(format: 'json' | 'pretty'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'buildcached-log-'));
  dirs.push(dir);
  const path = join(dir, 'out.log');
  const fd = openSync(path, 'w');
  const log = createLogger('info', fd, format);
  log.info({ reqId: 'req-7', status: 200 }, 'request');
  // The JSON destination writes asynchronously: wait for the line to land before closing the descriptor.
  for (let i = 0; i < 200 && !readFileSync(path, 'utf8').endsWith('\n'); i++) await new Promise((r) => setTimeout(r, 10));
  closeSync(fd);
  return readFileSync(path, 'utf8');
}

describe('log.format', () => {
  it('json: one JSON object per line', async () => {
    const line = JSON.parse((await written('json')).trim()) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 30, msg: 'request', reqId: 'req-7', status: 200, pid: process.pid });
  });

  it('pretty: a readable line with the level, message and fields, not JSON', async () => {
    const out = await written('pretty');
    expect(out).toMatch(/INFO/);
    expect(out).toMatch(/request/);
    expect(out).toMatch(/reqId: "req-7"/);
    expect(() => JSON.parse(out)).toThrow();
  });
});
