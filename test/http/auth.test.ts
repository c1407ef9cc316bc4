/**
 * Authentication and authorization over HTTP (issue 11): the auth matrix — every kind of caller × every kind of
 * operation, by Basic credentials on each request and through the Docker token flow — must show zero unauthorized
 * successes and zero authorized failures. Then the challenge, the token endpoint, failed-login limits, and tenant
 * isolation with auth on. Expectations come from a table written here by hand, not from the policy code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authFixture, basic, PASSWORDS, type AuthFixture } from '../helpers/auth-fixture.js';
import { OCI_MANIFEST, blob, expectOciError, pushBlob, pushImage, sendBytes, sha256, startRegistry, type TestRegistry } from './harness.js';

type Op = 'pull' | 'tags' | 'push' | 'mount' | 'delete';
type Caller =
  | 'anonymous'
  | 'reader'
  | 'ci'
  | 'wrong-password'
  | 'jwt'
  | 'jwt-url-issuer'
  | 'jwt-other-repo'
  | 'jwt-other-owner'
  | 'jwt-expired'
  | 'jwt-forged'
  | 'jwt-wrong-issuer'
  | 'jwt-wrong-audience';

const OWN = 'acme/web/cache'; // the OIDC job's own repository
const PUBLIC = 'public/app';
const TEAM = 'team/app';
const GROUP = 'grp/proj/cache'; // the URL issuer's job's repository
const REPOS = [OWN, PUBLIC, TEAM, GROUP];

/** What each caller may do, by repository: the rules of the fixture, restated by hand. */
const MAY: Record<Caller, Record<string, Op[]>> = {
  anonymous: { [PUBLIC]: ['pull', 'tags'] },
  reader: { [PUBLIC]: ['pull', 'tags'], [TEAM]: ['pull', 'tags'] },
  ci: Object.fromEntries(REPOS.map((r) => [r, ['pull', 'tags', 'push', 'mount', 'delete']])),
  'wrong-password': {},
  jwt: { [PUBLIC]: ['pull', 'tags'], [OWN]: ['pull', 'tags', 'push', 'mount'] },
  'jwt-url-issuer': { [PUBLIC]: ['pull', 'tags'], [GROUP]: ['pull', 'tags', 'push', 'mount'] },
  'jwt-other-repo': { [PUBLIC]: ['pull', 'tags'] },
  'jwt-other-owner': { [PUBLIC]: ['pull', 'tags'] },
  'jwt-expired': {},
  'jwt-forged': {},
  'jwt-wrong-issuer': {},
  'jwt-wrong-audience': {},
};
/** Callers whose credentials are bad: every request with them is 401, even where anonymous callers may pull. */
const BAD = new Set<Caller>(['wrong-password', 'jwt-expired', 'jwt-forged', 'jwt-wrong-issuer', 'jwt-wrong-audience']);

let fx: AuthFixture;
let reg: TestRegistry;
const seeded: Record<string, { manifest: string; layer: string }> = {};
const passwords = {} as Record<Caller, [string, string] | undefined>;

beforeAll(async () => {
  fx = await authFixture();
  // Seed every repository with an image, without auth (isolation on, so each repository owns its blobs).
  const seed = await startRegistry({ registry: { tenantIsolation: 'on' } });
  for (const repo of REPOS) {
    const { digest, body } = await pushImage(seed, repo, 'main');
    seeded[repo] = { manifest: digest, layer: JSON.parse(body.toString()).layers[0].digest };
  }
  await seed.close({ keepDir: true });
  // The matrix fails logins on purpose, all from 127.0.0.1: the limit has its own test below.
  reg = await startRegistry({ auth: { ...fx.auth, failedLogins: { max: 1_000_000 } } }, { dataDir: seed.dataDir });
  Object.assign(passwords, {
    anonymous: undefined,
    reader: ['reader', PASSWORDS.reader],
    ci: ['ci', PASSWORDS.ci],
    'wrong-password': ['ci', 'not-the-password'],
    jwt: ['oidc', await fx.jwt()],
    'jwt-url-issuer': ['oidc', await fx.jwt({ project_path: 'grp/proj' }, { issuer: fx.urlIssuer })],
    'jwt-other-repo': ['oidc', await fx.jwt({ repository: 'acme/api' })],
    'jwt-other-owner': ['oidc', await fx.jwt({ repository: 'acme/web', repository_owner: 'evil' })],
    'jwt-expired': ['oidc', await fx.jwt({}, { expiresIn: -600 })],
    'jwt-forged': ['oidc', await fx.jwt({}, { key: 'forged' })],
    'jwt-wrong-issuer': ['oidc', await fx.jwt({}, { issuer: 'https://gitlab.example.com' })],
    'jwt-wrong-audience': ['oidc', await fx.jwt({}, { audience: 'someone-else' })],
  });
});
afterAll(async () => {
  await reg?.close();
  await fx?.close();
});

/** A token from the token endpoint for `scope`, by the caller's password; undefined when the login is refused. */
async function tokenFor(caller: Caller, scope: string): Promise<string | undefined> {
  const creds = passwords[caller];
  const req = reg.http().get(`/token?service=buildcached&scope=${encodeURIComponent(scope)}`);
  const res = creds ? await req.set('Authorization', basic(...creds)) : await req;
  if (res.status === 401) return undefined;
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.token as string;
}

type Mode = 'basic' | 'token';

async function authHeader(caller: Caller, mode: Mode, scope: string): Promise<string | undefined> {
  const creds = passwords[caller];
  if (mode === 'basic') return creds ? basic(...creds) : undefined;
  const token = await tokenFor(caller, scope);
  // A refused login leaves the caller with the bad password only: it would send that.
  return token ? `Bearer ${token}` : creds ? basic(...creds) : undefined;
}

/** Runs one operation; returns the status and whether it got past authorization. */
async function run(caller: Caller, mode: Mode, op: Op, repo: string): Promise<{ status: number; passed: boolean }> {
  const scope = op === 'push' ? `repository:${repo}:pull,push` : op === 'mount' ? `repository:${repo}:pull,push repository:${PUBLIC}:pull` : op === 'delete' ? `repository:${repo}:delete` : `repository:${repo}:pull`;
  const auth = await authHeader(caller, mode, scope);
  const withAuth = <T extends { set(k: string, v: string): T }>(r: T) => (auth ? r.set('Authorization', auth) : r);
  let res;
  switch (op) {
    case 'pull':
      res = await withAuth(reg.http().get(`/v2/${repo}/manifests/main`));
      return { status: res.status, passed: res.status === 200 };
    case 'tags':
      res = await withAuth(reg.http().get(`/v2/${repo}/tags/list`));
      return { status: res.status, passed: res.status === 200 };
    case 'push': {
      const b = blob(64);
      res = await sendBytes(withAuth(reg.http().post(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`)).set('Content-Type', 'application/octet-stream'), b.data);
      return { status: res.status, passed: res.status === 201 };
    }
    case 'mount': {
      // From the public repository, which every caller may read: 201 when the caller may push here.
      res = await withAuth(reg.http().post(`/v2/${repo}/blobs/uploads/?mount=${seeded[PUBLIC]!.layer}&from=${PUBLIC}`));
      return { status: res.status, passed: res.status === 201 };
    }
    case 'delete':
      // A digest nobody has: an allowed delete gets as far as 404 MANIFEST_UNKNOWN, and nothing is lost.
      res = await withAuth(reg.http().delete(`/v2/${repo}/manifests/${sha256('nothing')}`));
      return { status: res.status, passed: res.status === 404 };
  }
}

describe('the auth matrix', () => {
  const CALLERS = Object.keys(MAY) as Caller[];
  const OPS: Op[] = ['pull', 'tags', 'push', 'mount', 'delete'];
  for (const mode of ['basic', 'token'] as Mode[]) {
    it(`${mode === 'basic' ? 'Basic credentials on every request' : 'through the token endpoint'}: zero unauthorized successes, zero authorized failures`, async () => {
      const wrong: string[] = [];
      let checked = 0;
      for (const caller of CALLERS) {
        for (const repo of REPOS) {
          for (const op of OPS) {
            const allowed = !BAD.has(caller) && (MAY[caller][repo] ?? []).includes(op);
            const { status, passed } = await run(caller, mode, op, repo);
            checked++;
            if (passed !== allowed) wrong.push(`${caller} ${op} ${repo}: ${status}, expected ${allowed ? 'allowed' : 'refused'}`);
            if (!allowed) {
              // Refusals are 401 (sign in, or a token with more scope) or 403 (signed in, not allowed); a mount the
              // caller may not make from its source would be 202, but every caller here may read the source.
              const expected = op === 'mount' && (MAY[caller][repo] ?? []).includes('push') ? [202] : BAD.has(caller) || caller === 'anonymous' ? [401] : [401, 403];
              if (!expected.includes(status)) wrong.push(`${caller} ${op} ${repo}: refused with ${status}, expected ${expected.join('/')}`);
            }
          }
        }
      }
      expect(wrong).toEqual([]);
      expect(checked).toBe(CALLERS.length * REPOS.length * OPS.length);
    });
  }

  it('the catalog lists only what the caller may pull', async () => {
    const list = async (auth?: string) => {
      const r = reg.http().get('/v2/_catalog');
      const res = auth ? await r.set('Authorization', auth) : await r;
      return { status: res.status, repos: res.body.repositories as string[] | undefined };
    };
    expect((await list()).repos).toEqual([PUBLIC]);
    expect((await list(basic('reader', PASSWORDS.reader))).repos).toEqual([PUBLIC, TEAM]);
    expect((await list(basic(...passwords.jwt!))).repos).toEqual([OWN, PUBLIC]);
    expect((await list(basic('ci', PASSWORDS.ci))).repos).toEqual([OWN, GROUP, PUBLIC, TEAM].sort());
    expect((await list(basic('ci', 'wrong'))).status).toBe(401);
  });

  it('a token for another scope does not open this one: 401 insufficient_scope when the rules would allow it, 403 when not', async () => {
    const narrow = await tokenFor('ci', `repository:${PUBLIC}:pull`);
    const push = await reg.http().post(`/v2/${OWN}/blobs/uploads/`).set('Authorization', `Bearer ${narrow}`);
    expectOciError(push, 401, 'UNAUTHORIZED');
    expect(push.headers['www-authenticate']).toContain(`scope="repository:${OWN}:pull,push"`);
    expect(push.headers['www-authenticate']).toContain('error="insufficient_scope"');
    const readerToken = await tokenFor('reader', `repository:${TEAM}:pull,push`);
    const denied = await reg.http().post(`/v2/${TEAM}/blobs/uploads/`).set('Authorization', `Bearer ${readerToken}`);
    expectOciError(denied, 403, 'DENIED');
  });

  it('a mount from a source the caller may not read is a new upload session (202), never 401 or 403', async () => {
    const token = await tokenFor('jwt', `repository:${OWN}:pull,push repository:${TEAM}:pull`);
    const res = await reg.http().post(`/v2/${OWN}/blobs/uploads/?mount=${seeded[TEAM]!.layer}&from=${TEAM}`).set('Authorization', `Bearer ${token}`);
    expect(res.status).toBe(202);
    expect(res.headers.location).toMatch(new RegExp(`^/v2/${OWN}/blobs/uploads/`));
    const head = await reg.http().head(`/v2/${OWN}/blobs/${seeded[TEAM]!.layer}`).set('Authorization', `Bearer ${token}`);
    expect(head.status).toBe(404);
  });
});

describe('the challenge and the token endpoint', () => {
  it('401 carries the Docker Bearer challenge: realm on this listener, service, the scope needed', async () => {
    const res = await reg.http().get(`/v2/${OWN}/manifests/main`);
    expectOciError(res, 401, 'UNAUTHORIZED');
    expect(res.headers['www-authenticate']).toBe(`Bearer realm="${reg.url}/token",service="buildcached",scope="repository:${OWN}:pull"`);
    const root = await reg.http().get('/v2/');
    expect(root.status).toBe(401); // docker login must not succeed without checking credentials
    expect(root.headers['www-authenticate']).toBe(`Bearer realm="${reg.url}/token",service="buildcached"`);
    expect((await reg.http().get('/v2/').set('Authorization', basic('reader', PASSWORDS.reader))).status).toBe(200);
    const bad = await reg.http().get('/v2/').set('Authorization', 'Bearer not-a-token');
    expect(bad.status).toBe(401);
    expect(bad.headers['www-authenticate']).toContain('error="invalid_token"');
  });

  it('a hostile Host header cannot shape the challenge', async () => {
    const res = await reg.http().get('/v2/').set('Host', 'evil", scope="x');
    expect(res.headers['www-authenticate']).not.toContain('evil');
  });

  it('GET with Basic answers token, access_token, expires_in, issued_at; the grant is the allowed part of what was asked', async () => {
    const res = await reg
      .http()
      .get(`/token?service=buildcached&scope=repository:${TEAM}:pull,push&scope=repository:${OWN}:pull`)
      .set('Authorization', basic('reader', PASSWORDS.reader));
    expect(res.status).toBe(200);
    expect(res.body.token).toBe(res.body.access_token);
    expect(res.body.expires_in).toBe(3600);
    expect(Date.parse(res.body.issued_at)).toBeGreaterThan(Date.now() - 60_000);
    expect(res.body.refresh_token).toBeUndefined();
    const token = `Bearer ${res.body.token}`;
    expect((await reg.http().get(`/v2/${TEAM}/manifests/main`).set('Authorization', token)).status).toBe(200);
    expect((await reg.http().get(`/v2/${OWN}/manifests/main`).set('Authorization', token)).status).toBe(403);
  });

  it('anonymous GET gets a token for what anonymous callers may do, and nothing else', async () => {
    const res = await reg.http().get(`/token?scope=repository:${PUBLIC}:pull,push&scope=repository:${TEAM}:pull`);
    expect(res.status).toBe(200);
    const token = `Bearer ${res.body.token}`;
    expect((await reg.http().get(`/v2/${PUBLIC}/manifests/main`).set('Authorization', token)).status).toBe(200);
    expect((await reg.http().get(`/v2/${TEAM}/manifests/main`).set('Authorization', token)).status).toBe(401);
    expect((await reg.http().post(`/v2/${PUBLIC}/blobs/uploads/`).set('Authorization', token)).status).toBe(401);
  });

  it('POST grant_type=password with an OIDC JWT, then refresh_token: a build outlives the JWT', async () => {
    const jwt = passwords.jwt![1];
    const res = await reg
      .http()
      .post('/token')
      .type('form')
      .send({ grant_type: 'password', username: 'oidc', password: jwt, service: 'buildcached', scope: `repository:${OWN}:pull,push`, access_type: 'offline', client_id: 'buildkit' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.expires_in).toBe(3600);
    expect(typeof res.body.refresh_token).toBe('string');
    const refreshed = await reg
      .http()
      .post('/token')
      .type('form')
      .send({ grant_type: 'refresh_token', refresh_token: res.body.refresh_token, service: 'buildcached', scope: `repository:${OWN}:pull,push` });
    expect(refreshed.status).toBe(200);
    const b = blob(100);
    const put = await sendBytes(
      reg.http().post(`/v2/${OWN}/blobs/uploads/?digest=${b.digest}`).set('Authorization', `Bearer ${refreshed.body.token}`).set('Content-Type', 'application/octet-stream'),
      b.data,
    );
    expect(put.status).toBe(201);
    // The refresh token also works as a Basic password (what clients that only know user:password can hold).
    const asPassword = await reg.http().get(`/v2/${OWN}/manifests/main`).set('Authorization', basic('oidc', res.body.refresh_token));
    expect(asPassword.status).toBe(200);
    // docker login asks GET with offline_token=true and stores the refresh token as its identity token.
    const login = await reg.http().get('/token?service=buildcached&offline_token=true&client_id=docker').set('Authorization', basic('oidc', jwt));
    expect(typeof login.body.refresh_token).toBe('string');
    // An access token is not a refresh token, and a forged one is nothing.
    const wrongUse = await reg.http().post('/token').type('form').send({ grant_type: 'refresh_token', refresh_token: res.body.token });
    expectOciError(wrongUse, 401, 'UNAUTHORIZED');
    expectOciError(await reg.http().post('/token').type('form').send({ grant_type: 'client_credentials' }), 400, 'PARAMETER_INVALID');
  });

  it('a wrong password at the token endpoint is 401 and the error says nothing of the password', async () => {
    const res = await reg.http().get('/token?scope=repository:team/app:pull').set('Authorization', basic('reader', 'hunter2-wrong'));
    expectOciError(res, 401, 'UNAUTHORIZED');
    expect(JSON.stringify(res.body)).not.toContain('hunter2');
  });
});

describe('hostile credentials', () => {
  it('malformed Authorization headers and token requests get 4xx with an OCI body, never a 5xx', async () => {
    const junk = [
      'Basic',
      'Basic ',
      'Basic ====',
      `Basic ${Buffer.from('no-colon').toString('base64')}`,
      `Basic ${Buffer.from(':empty-user').toString('base64')}`,
      `Basic ${Buffer.from(`ci:${'x'.repeat(4000)}`).toString('base64')}`,
      `Basic ${Buffer.from('oidc:a.b.c').toString('base64')}`,
      `Basic ${Buffer.from('oidc:eyJhbGciOiJub25lIn0.eyJpc3MiOiJidWlsZGNhY2hlZCJ9.').toString('base64')}`,
      'Bearer ',
      'Bearer a.b.c',
      'Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJidWlsZGNhY2hlZCIsInVzZSI6ImFjY2VzcyJ9.',
      'Negotiate abc',
      'bearer\tabc',
    ];
    for (const h of junk) {
      for (const path of ['/v2/', `/v2/${OWN}/manifests/main`, '/v2/_catalog', '/token?scope=repository:a:pull']) {
        const res = await reg.http().get(path).set('Authorization', h);
        expect([400, 401, 403], `${h} ${path}: ${res.status}`).toContain(res.status);
        expect(res.body.errors?.[0]?.code, `${h} ${path}`).toBeDefined();
      }
    }
    const forms = [{}, { grant_type: 'password' }, { grant_type: 'refresh_token' }, { grant_type: 'password', username: ['a', 'b'] }, { grant_type: ['x', 'y'] }];
    for (const f of forms) {
      const res = await reg.http().post('/token').type('form').send(f);
      expect([400, 401], JSON.stringify(f)).toContain(res.status);
    }
    const json = await reg.http().post('/token').set('Content-Type', 'application/json').send('{"grant_type":"password"}');
    expect(json.status).toBe(400);
    const huge = await reg.http().post('/token').type('form').send(`grant_type=password&password=${'x'.repeat(100_000)}`);
    expect(huge.status).toBe(413);
    // Still serving.
    expect((await reg.http().get('/v2/').set('Authorization', basic('ci', PASSWORDS.ci))).status).toBe(200);
  });

  it('a token asking for hundreds of scopes is granted at most 64', async () => {
    const scopes = Array.from({ length: 300 }, (_, i) => `repository:team/r${i}:pull`).join(' ');
    const res = await reg.http().post('/token').type('form').send({ grant_type: 'password', username: 'ci', password: PASSWORDS.ci, scope: scopes });
    expect(res.status).toBe(200);
    const payload = JSON.parse(Buffer.from(res.body.token.split('.')[1], 'base64url').toString());
    expect(payload.g).toHaveLength(64);
  });
});

describe('tenant isolation with auth on', () => {
  it('a caller allowed a/** cannot HEAD, GET or mount a blob that only b/x has, by digest', async () => {
    const f = await authFixture([{ user: 'reader', repositories: ['a/**'], actions: ['pull', 'push'] }]);
    const seed = await startRegistry({ registry: { tenantIsolation: 'on' } });
    const secret = blob(300);
    await pushBlob(seed, 'b/x', secret.data);
    await seed.close({ keepDir: true });
    const r = await startRegistry({ auth: f.auth }, { dataDir: seed.dataDir });
    try {
      const auth = basic('reader', PASSWORDS.reader);
      expect((await r.http().head(`/v2/a/y/blobs/${secret.digest}`).set('Authorization', auth)).status).toBe(404);
      expectOciError(await r.http().get(`/v2/a/y/blobs/${secret.digest}`).set('Authorization', auth), 404, 'BLOB_UNKNOWN');
      const m = await r.http().post(`/v2/a/y/blobs/uploads/?mount=${secret.digest}`).set('Authorization', auth);
      expect(m.status).toBe(202);
      const from = await r.http().post(`/v2/a/y/blobs/uploads/?mount=${secret.digest}&from=b/x`).set('Authorization', auth);
      expect(from.status).toBe(202);
      expect((await r.http().head(`/v2/a/y/blobs/${secret.digest}`).set('Authorization', auth)).status).toBe(404);
      // b/x itself is refused to this caller, and the blob is still there for one who may read b/x.
      expect((await r.http().head(`/v2/b/x/blobs/${secret.digest}`).set('Authorization', auth)).status).toBe(403);
      expect((await r.http().head(`/v2/b/x/blobs/${secret.digest}`).set('Authorization', basic('ci', PASSWORDS.ci))).status).toBe(200);
    } finally {
      await r.close();
      await f.close();
    }
  });
});

/** A registry of its own with the fixture's auth and a failed-login limit of 10 a minute, closed after `run`. */
async function withLimitedRegistry(run: (r: TestRegistry) => Promise<void>): Promise<void> {
  const f = await authFixture();
  const r = await startRegistry({ auth: { ...f.auth, failedLogins: { max: 10, window: '1m' } } });
  try {
    await run(r);
  } finally {
    await r.close();
    await f.close();
  }
}

describe('what the security review found', () => {
  it('a foreign-layer descriptor (urls) naming another tenant\'s digest grants nothing', async () => {
    const f = await authFixture([{ user: 'reader', repositories: ['evil/**'], actions: ['pull', 'push', 'delete'] }]);
    const r = await startRegistry({ auth: f.auth });
    try {
      const ci = basic('ci', PASSWORDS.ci);
      const evil = basic('reader', PASSWORDS.reader);
      const secret = blob(400);
      await sendBytes(r.http().post(`/v2/secret/app/blobs/uploads/?digest=${secret.digest}`).set('Authorization', ci).set('Content-Type', 'application/octet-stream'), secret.data);
      const config = blob(50);
      await sendBytes(r.http().post(`/v2/evil/x/blobs/uploads/?digest=${config.digest}`).set('Authorization', evil).set('Content-Type', 'application/octet-stream'), config.data);
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: 50 },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: secret.digest, size: 400, urls: ['https://example.invalid/x'] }],
      }));
      const put = await sendBytes(r.http().put('/v2/evil/x/manifests/v1').set('Authorization', evil).set('Content-Type', OCI_MANIFEST), manifest);
      expect(put.status).toBe(201); // a foreign layer need not be pushed…
      expect((await r.http().get(`/v2/evil/x/blobs/${secret.digest}`).set('Authorization', evil)).status).toBe(404); // …and reads nothing
      expect((await r.http().post(`/v2/evil/y/blobs/uploads/?mount=${secret.digest}&from=evil/x`).set('Authorization', evil)).status).toBe(202);
      // With isolation, one tenant's blob DELETE cannot take shared bytes from another.
      const del = await r.http().delete(`/v2/evil/x/blobs/${config.digest}`).set('Authorization', evil);
      expectOciError(del, 405, 'UNSUPPORTED');
      expect((await r.http().head(`/v2/secret/app/blobs/${secret.digest}`).set('Authorization', ci)).status).toBe(200);
    } finally {
      await r.close();
      await f.close();
    }
  });

  it('a burst of concurrent wrong logins cannot outrun the limit', () =>
    withLimitedRegistry(async (r) => {
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => r.http().get('/v2/').set('Authorization', basic('ci', `burst-${i}`))));
      const statuses = results.map((x) => x.status);
      expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(10);
      expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(50);
    }));

  it('a client sending known-good Basic credentials on every request, many at once, is never limited', () =>
    withLimitedRegistry(async (r) => {
      const ci = basic('ci', PASSWORDS.ci);
      expect((await r.http().get('/v2/').set('Authorization', ci)).status).toBe(200);
      const results = await Promise.all(Array.from({ length: 40 }, () => r.http().get('/v2/').set('Authorization', ci)));
      expect(results.map((x) => x.status).filter((s) => s !== 200)).toEqual([]);
    }));

  it('an access token stops working when the rules no longer allow what it grants (rules change on a restart)', async () => {
    const f = await authFixture([{ user: 'reader', repositories: ['extra/**'], actions: ['pull', 'push'] }]);
    const first = await startRegistry({ auth: f.auth });
    const token = (await first.http().get('/token?scope=repository:extra/app:pull,push').set('Authorization', basic('reader', PASSWORDS.reader))).body.token as string;
    expect((await first.http().post('/v2/extra/app/blobs/uploads/').set('Authorization', `Bearer ${token}`)).status).toBe(202);
    await first.close({ keepDir: true });
    const narrowed = { ...f.auth, rules: (f.auth.rules as unknown[]).slice(0, -1) };
    const second = await startRegistry({ auth: narrowed }, { dataDir: first.dataDir });
    try {
      expectOciError(await second.http().post('/v2/extra/app/blobs/uploads/').set('Authorization', `Bearer ${token}`), 403, 'DENIED');
    } finally {
      await second.close();
      await f.close();
    }
  });

  it('an access token derived from a refresh token ends no later than it', async () => {
    const login = await reg.http().get('/token?offline_token=true').set('Authorization', basic(...passwords.jwt!));
    const refresh = JSON.parse(Buffer.from(login.body.refresh_token.split('.')[1], 'base64url').toString()) as { exp: number };
    const res = await reg.http().post('/token').type('form').send({ grant_type: 'refresh_token', refresh_token: login.body.refresh_token, scope: `repository:${OWN}:pull` });
    const access = JSON.parse(Buffer.from(res.body.token.split('.')[1], 'base64url').toString()) as { exp: number };
    expect(access.exp).toBeLessThanOrEqual(refresh.exp);
  });
});

describe('failed logins', () => {
  it('are limited per client address: 429 with Retry-After, even for the right password, until the window ends', async () => {
    const f = await authFixture();
    const r = await startRegistry({ auth: { ...f.auth, failedLogins: { max: 3, window: '1m' } } });
    try {
      for (let i = 0; i < 3; i++) expect((await r.http().get('/v2/').set('Authorization', basic('ci', `guess-${i}`))).status).toBe(401);
      const blocked = await r.http().get('/v2/').set('Authorization', basic('ci', PASSWORDS.ci));
      expectOciError(blocked, 429, 'TOOMANYREQUESTS');
      expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(50);
      expect((await r.http().get('/token').set('Authorization', basic('ci', PASSWORDS.ci))).status).toBe(429);
      // Callers without credentials are not blocked: anonymous pulls go on.
      expect((await r.http().get('/v2/_catalog')).status).toBe(200);
    } finally {
      await r.close();
      await f.close();
    }
  });
});
