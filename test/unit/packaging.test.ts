/**
 * What the shipped files promise each other (issue 9): the Docker health check asks the daemon where it listens
 * instead of assuming a port, nothing serves through npx (it does not pass SIGTERM on), and the stop timeouts
 * leave the daemon its shutdownTimeout.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { defaultLayer, loadConfig, validateConfig } from '../../src/config/load.js';
import { HEAP_FLOOR_FLAG } from '../../src/process/heap-floor.js';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
const defaults = validateConfig(defaultLayer());

describe('packaging', () => {
  it('the Docker HEALTHCHECK runs `buildcached health` and names no port', () => {
    const check = /^HEALTHCHECK .*$/m.exec(read('Dockerfile'))?.[0] ?? '';
    expect(check).toContain('"/app/dist/main.js", "health"');
    expect(check).not.toMatch(/:\d{2,5}\b/);
  });

  it('both stages build from BASE_IMAGE, the official Node 20 image unless a build arg says otherwise', () => {
    const dockerfile = read('Dockerfile');
    expect(/^ARG BASE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1]).toBe('node:20-bookworm-slim');
    expect(dockerfile.match(/^FROM .*$/gm)).toEqual(['FROM ${BASE_IMAGE} AS build', 'FROM ${BASE_IMAGE}']);
  });

  it('the image needs no config/ at run time: the defaults are compiled into dist/', () => {
    const runtime = read('Dockerfile').split(/^FROM /m).at(-1)!;
    expect(runtime).not.toMatch(/COPY\s+config/);
  });

  it('nothing serves through npx', () => {
    for (const file of ['README.md', 'systemd/buildcached.service', 'Dockerfile']) expect(read(file), file).not.toMatch(/npx buildcached/);
    expect(/^ExecStart=(.*)$/m.exec(read('systemd/buildcached.service'))?.[1]).toMatch(/^\/usr\/bin\/node --initial-old-space-size=64 \/opt\/buildcached\/dist\/main\.js serve\b/);
  });

  it('every shipped way of starting a single process gives it the heap floor the primary gives its workers', () => {
    expect(/^ExecStart=\/usr\/bin\/node (\S+) /m.exec(read('systemd/buildcached.service'))?.[1]).toBe(HEAP_FLOOR_FLAG);
    expect(/^ENTRYPOINT \["node", "([^"]+)", "\/app\/dist\/main\.js"\]$/m.exec(read('Dockerfile'))?.[1]).toBe(HEAP_FLOOR_FLAG);
    expect((JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start).toBe(`node ${HEAP_FLOOR_FLAG} dist/main.js serve`);
  });

  it("systemd's TimeoutStopSec outlasts shutdownTimeout plus the 5 s the primary gives its workers", () => {
    const stop = Number(/^TimeoutStopSec=(\d+)$/m.exec(read('systemd/buildcached.service'))?.[1]);
    expect(stop * 1000).toBeGreaterThan(defaults.shutdownTimeout + 5_000);
  });

  it('the sample /etc/buildcached/config.yaml is a valid config', async () => {
    const c = await loadConfig({ file: fileURLToPath(new URL('../../config/buildcached.example.yaml', import.meta.url)), env: {} });
    expect(c.listen).toBe('0.0.0.0:5000');
    expect(c.admin.listen).toBe('');
    // It has neither tls nor auth, so it can only start beyond loopback by saying so.
    expect(c.allowInsecure).toBe(true);
  });

  it('the image listens on 0.0.0.0, so it allows that explicitly', () => {
    const env = read('Dockerfile').split(/^FROM /m).at(-1)!;
    expect(env).toMatch(/BUILDCACHED_LISTEN=0\.0\.0\.0:5000/);
    expect(env).toMatch(/BUILDCACHED_ALLOW_INSECURE=true/);
  });
});
