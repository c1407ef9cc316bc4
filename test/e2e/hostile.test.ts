/**
 * Issue 8, "Done when": seeded hostile and malformed requests (names, tags, digests, ranges, sessions, manifests,
 * query parameters, methods, framing, headers, slow and idle clients) against the real daemon with two workers.
 * After every request: no 5xx but 507, every 4xx under /v2/ an OCI error body with a code from README.md's list,
 * input that is invalid by the documented grammar or by HTTP never accepted, and a refused request wrote nothing
 * under blobs/, repositories/ or uploads/ (a snapshot of those trees before and after it: requests run one at a
 * time, so a change belongs to the request just answered, or — a write that lands after its refusal went out and
 * after the short settle pause of framing and header cases — to the one before it). After every batch: both
 * workers still serve, and the seeded image and tags are put back for the next batch.
 *
 * HOSTILE_SEED=<n> replays a run (the seed is printed), HOSTILE_COUNT=<n> changes its length. The full report of a
 * failing run is written to test-results/hostile-report.json.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, cleanup, makeTempDir, servingPids, sleep, startDaemon, type Daemon } from '../helpers/daemon.js';
import {
  Rng,
  SLOW,
  checkOutcome,
  describeStep,
  diffSnapshots,
  generate,
  mayWrite,
  readmeErrorCodes,
  seedFromEnv,
  storeSnapshot,
  type Case,
  type GenContext,
  type Known,
  type Session,
  type Step,
  type Violation,
} from '../helpers/hostile.js';
import { isResponse, printable, RawConnection, type Outcome } from '../helpers/raw-http.js';
import { MT, RegistryClient, expectStatus, imageManifest, sha256 } from '../helpers/registry-client.js';

const SEED = seedFromEnv();
const COUNT = Number(process.env.HOSTILE_COUNT ?? 1500);
const BATCH = 25;
/** Live sessions kept ready for generators; refilled (in parallel) when fewer than MIN_POOL are left. */
const POOL = 8;
const MIN_POOL = 3;

interface Failure extends Violation {
  index: number;
  family: string;
  variant: string;
  step: number;
  request: string;
  response: string;
  wireBytes: number;
}

function describeOutcome(o: Outcome): string {
  if (!isResponse(o)) return `no response (${o.none}) ${o.received}`;
  return `${o.status} [${o.headers['content-type'] ?? 'no content-type'}] ${printable(o.body, 300)}`;
}

/** Failures grouped by what broke (kind, status, code), each class with one shortest example per input variant. */
function report(failures: Failure[], daemonErrors: string[]): { text: string; json: unknown } {
  const groups = new Map<string, Map<string, { count: number; example: Failure }>>();
  for (const f of failures) {
    const key = `${f.kind}${f.status !== undefined ? ` ${f.status}` : ''}${f.code ? ` ${f.code}` : ''}`;
    const byVariant = groups.get(key) ?? new Map<string, { count: number; example: Failure }>();
    groups.set(key, byVariant);
    const v = `${f.family}/${f.variant}`;
    const seen = byVariant.get(v);
    if (!seen) byVariant.set(v, { count: 1, example: f });
    else {
      seen.count++;
      if (f.wireBytes < seen.example.wireBytes) seen.example = f;
    }
  }
  const lines = [`hostile requests: ${failures.length} violations in ${groups.size} classes (HOSTILE_SEED=${SEED}, HOSTILE_COUNT=${COUNT})`];
  const json: Record<string, unknown> = {};
  for (const [key, byVariant] of [...groups].sort((a, b) => a[0].localeCompare(b[0]))) {
    const total = [...byVariant.values()].reduce((s, x) => s + x.count, 0);
    const best = [...byVariant.values()].sort((a, b) => a.example.wireBytes - b.example.wireBytes)[0]!.example;
    lines.push('', `## ${key} — ${total}× over ${byVariant.size} input variants`);
    lines.push(`   e.g. #${best.index} ${best.family}/${best.variant}: ${best.request}`, `     → ${best.response}`, `     ${best.detail}`);
    lines.push(`   variants: ${[...byVariant].map(([v, x]) => `${v} (${x.count})`).join('; ')}`);
    json[key] = Object.fromEntries([...byVariant].map(([v, x]) => [v, { count: x.count, request: x.example.request, response: x.example.response, detail: x.example.detail, index: x.example.index }]));
  }
  if (daemonErrors.length) lines.push('', '## errors the daemon logged', ...daemonErrors.map((e) => `   ${e}`));
  return { text: lines.join('\n'), json: { seed: SEED, count: COUNT, classes: json, daemonErrors } };
}

describe('hostile and malformed requests against the daemon with two workers', () => {
  let daemon: Daemon;
  let client: RegistryClient;
  let known: Known;
  let codes: Set<string>;
  const rng = new Rng(SEED);
  // Contents of harness-made sessions come from their own stream, so the requests do not depend on how often the
  // pool was refilled.
  const harnessRng = new Rng(SEED ^ 0x9e3779b9);
  /** The seeded blobs' contents, to push them again if a request deleted one. */
  const seedData = new Map<string, Buffer>();
  /** The harness's own requests (seeding, restoring, cleaning up) reuse connections; generated ones never do. */
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

  beforeAll(async () => {
    console.log(`[hostile] HOSTILE_SEED=${SEED} HOSTILE_COUNT=${COUNT}`);
    codes = await readmeErrorCodes(join(REPO_ROOT, 'README.md'));
    // A fixed budget far above what the run stores: eviction never runs, whatever the host's disk holds, so every
    // change to the store comes from a request.
    const configPath = join(await makeTempDir('buildcached-hostile-cfg-'), 'config.yaml');
    await writeFile(configPath, 'storage:\n  maxBytes: 1TiB\n');
    daemon = await startDaemon({ args: ['--workers', '2', '--config', configPath] });
    expect(daemon.workerCount).toBe(2);
    client = new RegistryClient(daemon.url, agent);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed: SEED }));
    const layers = [harnessRng.bytes(300), harnessRng.bytes(700)];
    const manifest = imageManifest(config, layers);
    const blobs = [
      { data: config, mediaType: MT.OCI_CONFIG },
      ...layers.map((data) => ({ data, mediaType: MT.OCI_LAYER_GZIP })),
    ];
    for (const b of blobs) seedData.set(sha256(b.data), b.data);
    known = {
      repo: 'org/app',
      other: 'org/other',
      tag: 'main',
      manifest,
      manifestDigest: sha256(manifest),
      blobs: blobs.map((b) => ({ digest: sha256(b.data), size: b.data.length, mediaType: b.mediaType })),
      victims: ['victim-0', 'victim-1', 'victim-2', 'victim-3'],
    };
    await restoreSeed();
    expectStatus(await client.putManifest(known.other, 'main', manifest, MT.OCI_MANIFEST), 201, 'seed org/other');
  });
  afterAll(async () => {
    agent.destroy();
    await cleanup();
  });

  /** Puts back whatever of the seeded image and its tags a request removed (a 2xx delete may, legitimately). */
  async function restoreSeed(): Promise<void> {
    await Promise.all(
      [...seedData].map(async ([digest, data]) => {
        if ((await client.headBlob(known.repo, digest)).status !== 200) await client.pushBlob(known.repo, data, 'post-put');
      }),
    );
    await Promise.all(
      [known.tag, ...known.victims].map(async (tag) => {
        if ((await client.req('HEAD', `/v2/${known.repo}/manifests/${tag}`)).status !== 200) {
          expectStatus(await client.putManifest(known.repo, tag, known.manifest, MT.OCI_MANIFEST), 201, `restore ${tag}`);
        }
      }),
    );
  }

  it(`keeps every invariant over ${COUNT} generated requests`, { timeout: 600_000 }, async () => {
    const dir = daemon.dataDir;
    const failures: Failure[] = [];
    const pool: Session[] = [];
    const taken: Session[] = [];
    const freshTags: string[] = [];
    /** Sessions hostile requests opened (202): deleted at the end of each batch, so the store stays small. */
    const opened = new Set<string>();
    let tagCounter = 0;
    const ctx: GenContext = {
      known,
      session: () => {
        const s = pool.shift();
        if (!s) throw new Error('session pool empty: a generator took more sessions than the pool holds');
        taken.push(s);
        return s;
      },
      freshTag: () => {
        const t = `h${tagCounter++}`;
        freshTags.push(t);
        return t;
      },
    };

    async function newSession(): Promise<Session> {
      // Drawn before the first await: sessions are made in parallel, and a replay must give each the same bytes.
      const data = harnessRng.bytes(harnessRng.int(8, 40));
      const location = await client.startUpload(known.repo);
      const path = new URL(location).pathname;
      expectStatus(await client.req('PATCH', path, { body: data }), 202, 'seed session data');
      return { id: path.split('/').pop()!, repo: known.repo, data };
    }

    async function refill(): Promise<boolean> {
      if (pool.length >= MIN_POOL) return false;
      pool.push(...(await Promise.all(Array.from({ length: POOL - pool.length }, newSession))));
      return true;
    }

    const initialWorkers = new Set(daemon.workers());
    let batchStart = 0;

    async function endBatch(index: number): Promise<void> {
      const base = await client.req('GET', '/v2/');
      if (base.status !== 200) throw new Error(`daemon stopped serving after request #${index}: GET /v2/ → ${base.status}`);
      const now = daemon.workers();
      if (now.some((pid) => !initialWorkers.has(pid))) {
        failures.push({
          kind: 'worker-died',
          detail: `a worker process died and was replaced during requests #${batchStart}..#${index} (pids ${[...initialWorkers].join(',')} → ${now.join(',')})`,
          index,
          family: 'process',
          variant: 'worker-replaced',
          step: 0,
          request: `one of #${batchStart}..#${index}`,
          response: '-',
          wireBytes: 0,
        });
        initialWorkers.clear();
        for (const pid of now) initialWorkers.add(pid);
      }
      await Promise.all([
        ...taken.splice(0).map((s) => client.req('DELETE', `/v2/${s.repo}/blobs/uploads/${s.id}`)),
        ...[...opened].map((path) => client.req('DELETE', path)),
        ...freshTags.splice(0).map((t) => client.req('DELETE', `/v2/${known.repo}/manifests/${t}`)),
      ]);
      opened.clear();
      await restoreSeed();
      batchStart = index + 1;
    }

    async function runCase(index: number, cs: Case, before: Map<string, string>): Promise<Map<string, string>> {
      let snap = before;
      let conn: RawConnection | undefined;
      for (const [n, s] of cs.steps.entries()) {
        if (!conn || conn.isClosed) {
          conn?.destroy();
          conn = await RawConnection.open(daemon.port);
        }
        const idle = await Promise.all(Array.from({ length: s.holdIdle ?? 0 }, () => RawConnection.open(daemon.port)));
        await conn.send(s.wire);
        const timeout = s.timeoutMs ?? (s.expect === 'response' ? 3_000 : 250);
        const outcomes: Outcome[] = [await conn.next(s.method, Date.now() + timeout)];
        if (s.pipelined && isResponse(outcomes[0]!)) outcomes.push(await conn.next(s.pipelined.method, Date.now() + 1_000));
        if (n === cs.steps.length - 1 || s.expect === 'any') {
          conn.destroy();
          conn = undefined;
        }
        for (const c of idle) c.destroy();
        if (s.settleMs) await sleep(s.settleMs);
        const after = await storeSnapshot(dir);
        const found = checkStep(s, outcomes, snap, after);
        count(cs.family, outcomes[0]!);
        for (const o of outcomes) {
          const loc = isResponse(o) && o.status === 202 ? o.headers.location : undefined;
          if (loc && /\/blobs\/uploads\/[^/]+$/.test(loc)) opened.add(loc);
        }
        const bytes = s.wire.reduce((sum, p) => sum + (Buffer.isBuffer(p) ? p.length : 0), 0);
        for (const v of found) {
          failures.push({
            ...v,
            index,
            family: cs.family,
            variant: cs.variant,
            step: n,
            request: `${cs.steps.length > 1 ? `step ${n + 1}/${cs.steps.length}: ` : ''}${describeStep(s)}`,
            response: outcomes.map(describeOutcome).join(' | then: '),
            wireBytes: bytes,
          });
        }
        snap = after;
      }
      conn?.destroy();
      return snap;
    }

    function checkStep(s: Step, outcomes: Outcome[], before: Map<string, string>, after: Map<string, string>): Violation[] {
      const [first, second] = outcomes;
      const found = checkOutcome(s, first!, codes);
      if (s.pipelined && second && isResponse(second)) {
        if (isResponse(first!) && first.status >= 400) {
          found.push({ kind: 'pipelined-after-refusal', status: second.status, detail: `the request behind a refused one was served: ${s.pipelined.method} ${s.pipelined.target} → ${second.status}` });
        } else {
          found.push(...checkOutcome({ ...s, refuse: false }, second, codes, s.pipelined.method, s.pipelined.target));
        }
      }
      const wrote = mayWrite(s.method, first) || (s.pipelined !== undefined && mayWrite(s.pipelined.method, second));
      if (!wrote) {
        // A refused commit may discard its own session (distribution does); nothing else may change.
        const own = s.method === 'PUT' && s.session ? `-uploads/${s.session}/` : undefined;
        const diff = diffSnapshots(before, after, (c) => own !== undefined && c.startsWith(own));
        if (diff.length > 0) {
          const status = isResponse(first!) ? first.status : undefined;
          found.push({ kind: 'wrote-on-refusal', ...(status !== undefined ? { status } : {}), detail: `store changed: ${diff.slice(0, 6).join(' ')}${diff.length > 6 ? ` …(${diff.length})` : ''}` });
        }
      }
      return found;
    }

    /** family → status (or "none") → count: what the generated input reached, printed with every run. */
    const reached = new Map<string, Map<string, number>>();
    const count = (family: string, o: Outcome) => {
      const m = reached.get(family) ?? new Map<string, number>();
      reached.set(family, m);
      const key = isResponse(o) ? String(o.status) : 'none';
      m.set(key, (m.get(key) ?? 0) + 1);
    };

    const slowAt = new Map(SLOW.map((g, i) => [Math.floor(((i + 0.5) * COUNT) / SLOW.length), g]));
    await refill();
    let snap = await storeSnapshot(dir);
    for (let i = 0; i < COUNT; i++) {
      for (const gen of [slowAt.get(i), generate].filter((g) => g !== undefined)) {
        if (await refill()) snap = await storeSnapshot(dir);
        snap = await runCase(i, gen(rng, ctx), snap);
      }
      if ((i + 1) % BATCH === 0 || i === COUNT - 1) {
        await endBatch(i);
        snap = await storeSnapshot(dir);
      }
    }

    console.log(
      `[hostile] responses by family: ${[...reached]
        .map(([f, m]) => `${f} ${[...m].sort().map(([st, n]) => `${st}×${n}`).join(' ')}`)
        .join('; ')}`,
    );
    const daemonErrors = [
      ...new Set(
        daemon
          .logLines()
          .filter((l) => Number(l.level) >= 50)
          .map((l) => {
            const err = l.err as { message?: string; code?: string } | undefined;
            // One line per kind of error and route, not per session id or digest.
            const url = String(l.url)
              .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<id>')
              .replace(/sha(256|512):[0-9a-f]+/g, '<digest>')
              .replace(/\/manifests\/[^/?]+/, '/manifests/<ref>');
            return `${String(l.msg)}: ${err?.code ?? ''} ${err?.message ?? ''} (${String(l.method)} ${url})`.slice(0, 300);
          }),
      ),
    ];
    // Both workers answered generated requests (connections are spread over them), so both were exercised.
    expect(servingPids(daemon).size, 'worker processes that served requests').toBe(2);
    if (failures.length === 0 && daemonErrors.length > 0) console.warn(`[hostile] the daemon logged errors:\n${daemonErrors.join('\n')}`);
    if (failures.length > 0) {
      const r = report(failures, daemonErrors);
      await mkdir(join(REPO_ROOT, 'test-results'), { recursive: true });
      await writeFile(join(REPO_ROOT, 'test-results', 'hostile-report.json'), JSON.stringify(r.json, null, 2));
      throw new Error(r.text);
    }
  });
});
