/**
 * A seeded generator of malformed and hostile requests against the registry API, as raw HTTP/1.1 bytes, and the
 * invariants every answer must keep (issue 8, "Done when"):
 *   - no client input yields a 5xx other than 507;
 *   - every 4xx (and 507) under /v2/ carries {"errors":[{"code","message",…}]} with a code from README.md's list;
 *   - a refused request writes nothing;
 *   - input that is invalid by the documented grammar (names, tags, digests) or by HTTP framing is never accepted.
 * The same seed gives the same requests (HOSTILE_SEED replays a run); names and tags that must exist come from
 * the live store the test seeds, so mutations start from valid values.
 */
import { parseName } from '../../src/registry/names.js';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { MT, sha256 } from './registry-client.js';
import { errno } from './errors.js';
import { isResponse, printable, type Outcome, type Piece } from './raw-http.js';

// ---------------------------------------------------------------------------------------------------------------
// Randomness

/** mulberry32: tiny, fast, good enough to spread requests; the point is replayability, not statistics. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  hex(n: number): string {
    let s = '';
    while (s.length < n) s += Math.floor(this.next() * 16).toString(16);
    return s;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
  uuid(): string {
    const h = this.hex(32);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }
}

export const DEFAULT_SEED = 0x5eed0008;

/** HOSTILE_SEED (decimal or 0x-hex) or the fixed default, so CI runs are stable and any run can be replayed. */
export function seedFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.HOSTILE_SEED;
  if (v === undefined || v === '') return DEFAULT_SEED;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`HOSTILE_SEED must be an integer, got "${v}"`);
  return n >>> 0;
}

// ---------------------------------------------------------------------------------------------------------------
// The grammar the docs promise (DESIGN.md §3), to know which generated values are invalid and must be refused.

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
export const validName = (s: string) => s.length <= 255 && NAME_RE.test(s);
export const validTag = (s: string) => /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/.test(s);
export const validDigest = (s: string) => /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.test(s);

/** Whitespace in a request-target splits the request line: the server then parses some other request. */
const splitsRequestLine = (s: string) => /\s/.test(s);

/** A query value as a server decodes it (a malformed escape stays as it is). */
function queryDecoded(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Requests

export interface Step {
  /** Method and request-target as on the wire (latin1), for the report and for reading the response. */
  method: string;
  target: string;
  wire: Piece[];
  /** 'response': the request is complete (or broken so that the parser can tell at once) and must be answered;
   *  'any': the client leaves or never completes it, so an answer is optional. */
  expect: 'response' | 'any';
  /** Input that is invalid by the documented grammar or by HTTP: any 2xx/3xx is a failure. */
  refuse?: boolean;
  /** A second request pipelined behind this one; after a framing refusal it must never be served. */
  pipelined?: { method: string; target: string };
  /** Waits this long before the store is compared (a write that follows a refusal). */
  settleMs?: number;
  timeoutMs?: number;
  /** A refused commit (PUT) may discard this session, as distribution does; nothing else may change. */
  session?: string;
  /** Idle connections held open while this step runs. */
  holdIdle?: number;
}

export interface Case {
  family: string;
  /** The class of input, without random parts: failures are deduplicated by it. */
  variant: string;
  /** Steps on one keep-alive connection (a new one if the server closed it). */
  steps: Step[];
}

export interface Known {
  repo: string;
  /** A second repository, holding nothing of `repo`'s sessions. */
  other: string;
  tag: string;
  manifest: Buffer;
  manifestDigest: string;
  /** Config first, then layers. */
  blobs: Array<{ digest: string; size: number; mediaType: string }>;
  /** Tags on `repo` that framing cases try to delete; the test restores them. */
  victims: string[];
}

export interface Session {
  id: string;
  repo: string;
  /** The bytes already uploaded to it. */
  data: Buffer;
}

export interface GenContext {
  known: Known;
  /** A live upload session of `known.repo` with some data, for this case alone. */
  session(): Session;
  /** A tag nobody uses yet (the test deletes it again). */
  freshTag(): string;
}

/** Chars above 0xFF go out as UTF-8; the rest as single bytes (so `\xff` stays one raw byte). */
export function toWire(s: string): string {
  let out = '';
  for (const ch of s) out += ch.codePointAt(0)! > 0xff ? Buffer.from(ch, 'utf8').toString('latin1') : ch;
  return out;
}

interface ReqOpts {
  headers?: Array<[string, string]>;
  body?: Buffer | string;
  /** Add Content-Length for the body (default: when there is a body, or for PUT/POST/PATCH). */
  length?: boolean;
  /** Connection: close (default true: one request per connection unless the case says otherwise). */
  close?: boolean;
  host?: boolean;
  version?: string;
}

/** Serializes one request, byte-exact: nothing is normalised. */
export function rawRequest(method: string, target: string, o: ReqOpts = {}): Buffer {
  const body = o.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(o.body) ? o.body : Buffer.from(o.body, 'latin1');
  let head = `${method} ${toWire(target)} ${o.version ?? 'HTTP/1.1'}\r\n`;
  if (o.host !== false) head += 'Host: 127.0.0.1\r\n';
  for (const [k, v] of o.headers ?? []) head += `${k}: ${v}\r\n`;
  const wantsLength = o.length ?? (body.length > 0 || ['PUT', 'POST', 'PATCH'].includes(method));
  if (wantsLength) head += `Content-Length: ${body.length}\r\n`;
  if (o.close !== false) head += 'Connection: close\r\n';
  head += '\r\n';
  if (/[^\x00-\xff]/.test(head)) throw new Error(`request head has non-byte characters: ${printable(head)}`);
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

function step(method: string, target: string, o: ReqOpts & Partial<Omit<Step, 'method' | 'target' | 'wire'>> = {}): Step {
  const { refuse, settleMs, timeoutMs, session, pipelined, holdIdle, expect, ...req } = o;
  return {
    method,
    target: toWire(target),
    wire: [rawRequest(method, target, req)],
    expect: expect ?? 'response',
    ...(refuse ? { refuse } : {}),
    ...(settleMs ? { settleMs } : {}),
    ...(timeoutMs ? { timeoutMs } : {}),
    ...(session ? { session } : {}),
    ...(pipelined ? { pipelined } : {}),
    ...(holdIdle ? { holdIdle } : {}),
  };
}

/** Chunked transfer-coding of `data` in pieces of at most `size`. */
export function chunked(data: Buffer, size = 7): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) {
    const c = data.subarray(i, i + size);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------------------------
// Values to start from and ways to spoil them

const HOSTILE_CHARS = [...'Aaz09._-/\\%:@!$&\'()*+,;=~ \t\0#?', '\u00e4', '\u20ac', '\u202e', '\u0430', '\ud83d\ude00', '\x7f', '\xff'];

/** One to three edits (replace, insert, delete, case flip, doubled separator) of a valid value. */
export function mutate(r: Rng, s: string): string {
  const out = [...s];
  for (let n = r.int(1, 3); n > 0; n--) {
    const i = r.int(0, Math.max(0, out.length - 1));
    switch (r.int(0, 4)) {
      case 0:
        out[i] = r.pick(HOSTILE_CHARS);
        break;
      case 1:
        out.splice(i, 0, r.pick(HOSTILE_CHARS));
        break;
      case 2:
        if (out.length > 1) out.splice(i, 1);
        break;
      case 3:
        out[i] = out[i] === out[i]!.toUpperCase() ? out[i]!.toLowerCase() : out[i]!.toUpperCase();
        break;
      default:
        out.splice(i, 0, r.pick(['/', '.', '_', '-', '..', '__', '//']));
    }
  }
  return out.join('');
}

function decodesToName(raw: string): boolean {
  try {
    parseName(decodeURIComponent(raw));
    return true;
  } catch {
    return false;
  }
}

/** A variant name and its value. */
type Pick = readonly [string, string];

function badName(r: Rng, known: Known): Pick {
  const base = known.repo;
  return r.pick<() => Pick>([
    () => ['uppercase', r.pick(['Org/App', 'ORG/app', 'org/apP'])],
    () => ['dotdot-segment', r.pick([`${base}/..`, `org/../app`, '..', '../org/app', 'org/app/../../../etc'])],
    () => ['dot-segment', r.pick(['org/./app', '.', './org', 'org/.'])],
    () => ['percent-encoded', r.pick(['org/%2e%2e/app', 'org%2fapp', '%2e%2e', 'org/app%00', 'org/%61pp', 'org%5capp'])],
    () => ['nul-byte', r.pick(['org/app\0', '\0', 'org\0/app'])],
    () => ['backslash', r.pick(['org\\app', 'org\\..\\app', '..\\..'])],
    () => ['empty-segment', r.pick(['org//app', '/org/app', 'org/app/'])],
    () => ['too-long', r.pick(['a'.repeat(r.int(256, 600)), Array.from({ length: r.int(130, 200) }, () => 'ab').join('/')])],
    () => ['underscore-prefix', r.pick(['_org/app', 'org/_app', `${base}/_tags`, `${base}/_manifests`, '_catalog/x'])],
    () => ['separator-edge', r.pick(['-org/app', 'org-/app', 'org./app', '.org/app', 'org___app', 'org..app', 'org/app.', 'org/-'])],
    () => ['unicode', r.pick(['org/\u00e4pp', '\u65e5\u672c/app', 'org/app\u202e', 'org/\u0430pp', 'org/app\ufeff', 'org/\ud83d\ude00'])],
    () => ['punctuation', `${base}${r.pick([';x', '$', '!', '*', "'", '(', '@x', ':x', '~', '+', ',', '=', '"', '<', '{'])}`],
    () => ['control-char', `${base}${String.fromCharCode(r.pick([1, 9, 0x1b, 0x7f, 10, 13]))}x`],
    () => ['space', r.pick(['org/a pp', ' org/app', 'org/app '])],
    () => ['mutated', mutate(r, base)],
  ])();
}

function badTag(r: Rng, known: Known): Pick {
  return r.pick<() => Pick>([
    () => ['leading-dash-or-dot', r.pick(['-main', '.main', '-', '.'])],
    () => ['too-long', 'a'.repeat(r.int(129, 400))],
    () => ['longest-valid', `t${'a'.repeat(127)}`],
    () => ['colon', r.pick(['ma:in', 'main:', ':main', `main@${known.manifestDigest}`])],
    () => ['dotdot', r.pick(['..', '...', '..main'])],
    () => ['percent-encoded', r.pick(['%2e%2e', 'main%00', 'ma%69n', '%2fmain'])],
    () => ['unicode', r.pick(['m\u00e4in', 'main\u202e', '\u0442ag'])],
    () => ['slash', r.pick(['main/x', 'main/', ''])],
    () => ['punctuation', `main${r.pick([';', '!', '$', '*', '~', '+', ',', '"', '<', "'", '\\'])}`],
    () => ['nul-or-control', `main${r.pick(['\0', '\x01', '\x7f'])}`],
    () => ['space', r.pick(['ma in', 'main\t'])],
    () => ['mutated', mutate(r, known.tag)],
  ])();
}

function badDigest(r: Rng, real: string): Pick {
  const hex = real.slice('sha256:'.length);
  return r.pick<() => Pick>([
    () => ['wrong-length', r.pick([`sha256:${hex.slice(1)}`, `sha256:${hex}0`, `sha256:${hex.slice(0, 32)}`])],
    () => ['uppercase', r.pick([`sha256:${hex.toUpperCase()}`, `SHA256:${hex}`, `Sha256:${hex}`])],
    () => ['sha512', r.pick([`sha512:${hex}`, `sha512:${r.hex(128)}`, `sha512:${r.hex(127)}`])],
    () => ['other-algorithm', `${r.pick(['md5', 'sha1', 'sha384', 'blake3', 'sha256+b64', 'sha-256', 'SHA256'])}:${r.hex(r.pick([32, 40, 64, 96]))}`],
    () => ['non-hex', `sha256:${hex.slice(0, 10)}${r.pick(['g', 'z', '-', 'G', '_'])}${hex.slice(11)}`],
    () => ['malformed', r.pick(['sha256:', 'sha256', hex, `:${hex}`, `sha256::${hex}`, `sha256:${hex}:x`, `${real}.json`, `${real}/`])],
    () => ['percent-or-nul', r.pick([`sha256%3a${hex}`, `${real}%00`, `${real}\0`, `sha256%3A${hex}`])],
    () => ['huge', `sha256:${'a'.repeat(r.int(4000, 9000))}`],
    () => ['unknown-valid', `sha256:${r.hex(64)}`],
    () => ['mutated', mutate(r, real)],
  ])();
}

// ---------------------------------------------------------------------------------------------------------------
// Manifest bodies

const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

function imageBody(known: Known, over: Record<string, unknown> = {}): Buffer {
  const [config, ...layers] = known.blobs;
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.OCI_MANIFEST,
      config: { mediaType: config!.mediaType, digest: config!.digest, size: config!.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
      ...over,
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Families of cases

type Gen = (r: Rng, c: GenContext) => Case;

const v2 = (c: GenContext) => `/v2/${c.known.repo}`;
const layer = (c: GenContext) => c.known.blobs[1]!;

/** A request on some route of `name`: which route, and whether it writes, is the generator's choice. */
function onName(r: Rng, c: GenContext, name: string, refuse: boolean): [string, Step] {
  const k = c.known;
  const b = r.pick(k.blobs);
  const routes: Array<() => [string, Step]> = [
    () => ['tags-list', step('GET', `/v2/${name}/tags/list`, { refuse })],
    () => ['manifest-get', step(r.pick(['GET', 'HEAD']), `/v2/${name}/manifests/${k.tag}`, { refuse })],
    () => ['manifest-put', step('PUT', `/v2/${name}/manifests/${c.freshTag()}`, { refuse, body: k.manifest, headers: [['Content-Type', MT.OCI_MANIFEST]] })],
    () => ['manifest-delete', step('DELETE', `/v2/${name}/manifests/${r.pick(k.victims)}`, { refuse, settleMs: 30 })],
    () => ['blob-get', step(r.pick(['GET', 'HEAD']), `/v2/${name}/blobs/${b.digest}`, { refuse })],
    () => ['blob-delete', step('DELETE', `/v2/${name}/blobs/${b.digest}`, { refuse })],
    () => ['upload-start', step('POST', `/v2/${name}/blobs/uploads/`, { refuse })],
    () => {
      const body = Buffer.from(`monolithic ${r.hex(8)}`);
      return ['upload-monolithic', step('POST', `/v2/${name}/blobs/uploads/?digest=${sha256(body)}`, { refuse, body })];
    },
    () => ['mount', step('POST', `/v2/${name}/blobs/uploads/?mount=${b.digest}&from=${k.repo}`, { refuse })],
    // A query value is percent-decoded (clients send from=org%2Fapp): one that decodes to a valid name is valid.
    () => ['mount-from', step('POST', `${v2(c)}/blobs/uploads/?mount=${b.digest}&from=${name}`, { refuse: refuse && !decodesToName(name) })],
    () => ['referrers', step('GET', `/v2/${name}/referrers/${k.manifestDigest}`, { refuse })],
    () => {
      const sess = c.session();
      return ['session', step(r.pick(['GET', 'PATCH', 'DELETE']), `/v2/${name}/blobs/uploads/${sess.id}`, { refuse, body: 'x'.repeat(r.int(0, 9)) })];
    },
  ];
  return r.pick(routes)();
}

const names: Gen = (r, c) => {
  const [variant, name] = badName(r, c.known);
  if (name === c.known.repo) return names(r, c);
  const [route, s] = onName(r, c, name, !validName(name) && !splitsRequestLine(name));
  return { family: 'names', variant: `${variant} ${route}`, steps: [s] };
};

const tags: Gen = (r, c) => {
  const k = c.known;
  const [variant, tag] = badTag(r, k);
  if (tag === k.tag || k.victims.includes(tag)) return tags(r, c);
  const refuse = !validTag(tag) && !splitsRequestLine(tag);
  const method = r.pick(['GET', 'HEAD', 'DELETE', 'PUT', 'PUT']);
  const s =
    method === 'PUT'
      ? step('PUT', `${v2(c)}/manifests/${tag}`, { refuse, body: k.manifest, headers: [['Content-Type', MT.OCI_MANIFEST]] })
      : step(method, `${v2(c)}/manifests/${tag}`, { refuse });
  return { family: 'tags', variant: `${variant} ${method}`, steps: [s] };
};

const digests: Gen = (r, c) => {
  const k = c.known;
  const real = r.pick([...k.blobs.map((b) => b.digest), k.manifestDigest]);
  const [variant, d] = badDigest(r, real);
  if (d === k.manifestDigest || k.blobs.some((b) => b.digest === d)) return digests(r, c);
  if (splitsRequestLine(d)) return digests(r, c);
  const invalid = !validDigest(d);
  const routes: Array<() => [string, Step]> = [
    () => ['blob-get', step(r.pick(['GET', 'HEAD']), `${v2(c)}/blobs/${d}`, { refuse: true })],
    () => ['blob-delete', step('DELETE', `${v2(c)}/blobs/${d}`, { refuse: true })],
    () => ['manifest-get', step(r.pick(['GET', 'HEAD']), `${v2(c)}/manifests/${d}`, { refuse: true })],
    () => ['manifest-delete', step('DELETE', `${v2(c)}/manifests/${d}`, { refuse: true })],
    () => ['manifest-put', step('PUT', `${v2(c)}/manifests/${d}`, { refuse: true, body: k.manifest, headers: [['Content-Type', MT.OCI_MANIFEST]] })],
    () => ['referrers', step('GET', `${v2(c)}/referrers/${d}`, { refuse: invalid })],
    () => ['upload-digest', step('POST', `${v2(c)}/blobs/uploads/?digest=${d}`, { refuse: true, body: `blob ${r.hex(6)}` })],
    // A query value is percent-decoded first: `sha256%3A…` may well be a valid digest there.
    () => ['mount', step('POST', `${v2(c)}/blobs/uploads/?mount=${d}&from=${k.repo}`, { refuse: !validDigest(queryDecoded(d)) })],
    () => {
      const s = c.session();
      return ['session-put', step('PUT', `${v2(c)}/blobs/uploads/${s.id}?digest=${d}`, { refuse: true, session: s.id })];
    },
  ];
  const [route, s] = r.pick(routes)();
  return { family: 'digests', variant: `${variant} ${route}`, steps: [s] };
};

const ranges: Gen = (r, c) => {
  const k = c.known;
  const [config, l] = [k.blobs[0]!, layer(c)];
  const [target, size] = r.pick<[string, number]>([
    [`${v2(c)}/blobs/${l.digest}`, l.size],
    [`${v2(c)}/blobs/${config.digest}`, config.size],
    [`${v2(c)}/blobs/sha256:${r.hex(64)}`, l.size],
    [`${v2(c)}/manifests/${k.tag}`, k.manifest.length],
  ]);
  const [variant, headers] = r.pick<() => [string, Array<[string, string]>]>([
    () => ['multi-range', [['Range', r.pick(['bytes=0-1,3-4', 'bytes=0-0,-1', `bytes=${'0-0,'.repeat(r.int(100, 800))}0-0`])]]],
    () => ['reversed', [['Range', `bytes=${r.int(5, size - 1)}-${r.int(0, 4)}`]]],
    () => ['huge', [['Range', r.pick(['bytes=0-99999999999999999999', 'bytes=99999999999999999999-', 'bytes=-99999999999999999999', `bytes=0-${Number.MAX_SAFE_INTEGER + 2}`])]]],
    () => ['past-end', [['Range', r.pick([`bytes=${size}-`, `bytes=${size}-${size + 10}`, `bytes=${size + 1000}-${size + 2000}`])]]],
    () => ['empty-suffix', [['Range', 'bytes=-0']]],
    () => [
      'garbage',
      [['Range', r.pick(['bytes=abc', 'bytes=', 'bytes', 'items=0-1', 'bytes=--1', 'bytes=0--1', 'bytes=1-2-3', 'bytes=0x1-0x2', 'bytes=1e3-', 'bytes= 0 - 1 ', 'bytes=-', 'bytes=0-1;', 'Bytes=0-1', 'bytes=-1-5', `bytes=${'0'.repeat(5000)}-1`, toWire('bytes=\u00bd-1')])]],
    ],
    () => ['repeated-header', [['Range', 'bytes=0-1'], ['Range', 'bytes=2-3']]],
    () => ['valid', [['Range', `bytes=${r.int(0, size - 1)}-${r.chance(0.5) ? '' : r.int(size - 1, size + 5)}`]]],
    () => ['conditional', [['Range', 'bytes=0-1'], ['If-Range', r.pick(['"garbage"', 'Wed, 21 Oct 2015 07:28:00 GMT', '\x01'])]]],
  ])();
  const method = r.pick(['GET', 'GET', 'GET', 'HEAD']);
  return { family: 'ranges', variant: `${variant} ${method}`, steps: [step(method, target, { headers })] };
};

const sessions: Gen = (r, c) => {
  const k = c.known;
  const up = `${v2(c)}/blobs/uploads`;
  const chunk = () => Buffer.from(`chunk-${r.hex(r.int(2, 12))}`);
  const cases: Array<() => [string, Step[]]> = [
    () => {
      const m = r.pick(['GET', 'PATCH', 'PUT', 'DELETE']);
      return ['unknown-uuid', [step(m, `${up}/${r.uuid()}${m === 'PUT' ? `?digest=${sha256('x')}` : ''}`, { refuse: true, body: m === 'PATCH' ? chunk() : undefined })]];
    },
    () => {
      const s = c.session();
      const id = r.pick([s.id.toUpperCase(), `${s.id}x`, s.id.slice(1), '..', '%2e%2e', 'x'.repeat(300), '00000000-0000-0000-0000-000000000000', `${s.id}/data`, 'meta.json', '.', `${s.id}%00`, `${s.id}\0`, `{${s.id}}`, s.id.replace(/-/g, '')]);
      const m = r.pick(['GET', 'PATCH', 'PUT', 'DELETE']);
      return ['non-uuid-id', [step(m, `${up}/${id}${m === 'PUT' ? `?digest=${sha256(s.data)}` : ''}`, { refuse: true, body: m === 'PATCH' ? chunk() : undefined })]];
    },
    () => {
      const s = c.session();
      const m = r.pick(['GET', 'PATCH', 'PUT', 'DELETE']);
      return ['other-repository', [step(m, `/v2/${k.other}/blobs/uploads/${s.id}${m === 'PUT' ? `?digest=${sha256(s.data)}` : ''}`, { refuse: true, body: m === 'PATCH' ? chunk() : undefined })]];
    },
    () => {
      const s = c.session();
      const body = chunk();
      const cr = r.pick(['abc', '5-2', '0-', '-5', `0-99999999999999999999`, 'bytes=x-y', '', ' ', '1-2-3', `${s.data.length}-`, 'bytes */16', `${s.data.length}-${s.data.length + body.length - 1}/1`, '\x01']);
      return ['bad-content-range', [step('PATCH', `${up}/${s.id}`, { body, headers: [['Content-Range', cr]] })]];
    },
    () => {
      const s = c.session();
      const body = chunk();
      const start = r.pick([0, 1, s.data.length - 1, s.data.length + 1, s.data.length + 1000]);
      return ['out-of-order', [step('PATCH', `${up}/${s.id}`, { refuse: true, body, headers: [['Content-Range', `${start}-${start + body.length - 1}`]] })]];
    },
    () => {
      const s = c.session();
      const body = chunk();
      return ['range-length-mismatch', [step('PATCH', `${up}/${s.id}`, { refuse: true, body, headers: [['Content-Range', `${s.data.length}-${s.data.length + body.length + 4}`]] })]];
    },
    () => {
      const s = c.session();
      return ['put-without-digest', [step('PUT', `${up}/${s.id}${r.pick(['', '?', '?digest', '?digest=', '?Digest=' + sha256(s.data)])}`, { refuse: true, session: s.id })]];
    },
    () => {
      const s = c.session();
      return ['put-wrong-digest', [step('PUT', `${up}/${s.id}?digest=${r.pick([sha256(r.bytes(8)), `sha512:${r.hex(128)}`])}`, { refuse: true, session: s.id })]];
    },
    () => {
      // The digest of what the session holds, sent with one more chunk: the result no longer matches.
      const s = c.session();
      return ['put-final-chunk-mismatch', [step('PUT', `${up}/${s.id}?digest=${sha256(s.data)}`, { refuse: true, session: s.id, body: chunk() })]];
    },
    () => {
      const s = c.session();
      return ['put-digest-repeated', [step('PUT', `${up}/${s.id}?digest=${sha256(s.data)}&digest=${sha256('x')}`, { session: s.id })]];
    },
    () => {
      const s = c.session();
      return ['delete-twice', [step('DELETE', `${up}/${s.id}`, { close: false }), step('DELETE', `${up}/${s.id}`, { refuse: true })]];
    },
    () => {
      const s = c.session();
      return [
        'use-after-commit',
        [
          step('PUT', `${up}/${s.id}?digest=${sha256(s.data)}`, { close: false }),
          step(r.pick(['PATCH', 'GET', 'DELETE']), `${up}/${s.id}`, { refuse: true, body: chunk(), close: false }),
          step('PUT', `${up}/${s.id}?digest=${sha256(s.data)}`, { refuse: true }),
        ],
      ];
    },
    () => {
      const s = c.session();
      return ['use-after-delete', [step('DELETE', `${up}/${s.id}`, { close: false }), step(r.pick(['PATCH', 'GET']), `${up}/${s.id}`, { refuse: true, body: chunk() })]];
    },
    () => {
      const s = c.session();
      return ['valid-status', [step('GET', `${up}/${s.id}`)]];
    },
    () => {
      const s = c.session();
      return ['empty-chunk', [step('PATCH', `${up}/${s.id}`, { body: '', length: r.chance(0.5) })]];
    },
    () => {
      const body = chunk();
      return ['post-wrong-digest', [step('POST', `${up}/?digest=${sha256(Buffer.concat([body, Buffer.from('!')]))}`, { refuse: true, body })]];
    },
    () => ['post-digest-empty', [step('POST', `${up}/?digest=`, { refuse: true, body: chunk() })]],
    () => ['post-digest-no-body', [step('POST', `${up}/?digest=sha256:${r.hex(64)}`, { refuse: true })]],
  ];
  const [variant, steps] = r.pick(cases)();
  return { family: 'sessions', variant, steps };
};

const manifests: Gen = (r, c) => {
  const k = c.known;
  const [config, ...layers] = k.blobs;
  const desc = (l: { mediaType: string; digest: string; size: number }) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size });
  const cases: Array<() => [string, Buffer, string | undefined, boolean]> = [
    () => {
      const valid = imageBody(k).toString('latin1');
      const bad = r.pick(['{', '{"schemaVersion":2,', 'null', '[]', '"x"', '{}', '{"a":1}{"b":2}', valid.slice(0, -1), `${valid}x`, `\ufeff${valid}`, 'nul', '{"schemaVersion":2,"layers":[,]}', '{"schemaVersion":2} trailing']);
      return ['invalid-json', Buffer.from(toWire(bad), 'latin1'), MT.OCI_MANIFEST, true];
    },
    () => ['binary-garbage', r.bytes(r.int(1, 400)), MT.OCI_MANIFEST, true],
    () => ['utf16', Buffer.from(imageBody(k).toString('utf8'), 'utf16le'), MT.OCI_MANIFEST, true],
    () => ['empty-body', Buffer.alloc(0), MT.OCI_MANIFEST, true],
    () => {
      const ct = r.pick<string | undefined>(['text/plain', 'application/json', '', undefined, 'application/vnd.docker.distribution.manifest.v1+prettyjws', MT.OCI_INDEX, `${MT.OCI_MANIFEST}; charset=utf-8`, 'x'.repeat(r.int(2000, 6000)), `${MT.OCI_MANIFEST}\x01`, '*/*']);
      return ['content-type', imageBody(k), ct, false];
    },
    () => ['body-media-type-mismatch', imageBody(k, { mediaType: r.pick([MT.OCI_INDEX, DOCKER_MANIFEST, 'text/plain', 5, null]) }), MT.OCI_MANIFEST, false],
    () => ['missing-blobs', imageBody(k, { layers: [{ mediaType: MT.OCI_LAYER_GZIP, digest: `sha256:${r.hex(64)}`, size: 10 }] }), MT.OCI_MANIFEST, true],
    () => ['missing-config', imageBody(k, { config: { mediaType: MT.OCI_CONFIG, digest: `sha256:${r.hex(64)}`, size: 10 } }), MT.OCI_MANIFEST, true],
    () => ['absent-config', imageBody(k, { config: undefined }), MT.OCI_MANIFEST, true],
    () => {
      // Just past registry.maxManifestBytes (4 MiB by default), a valid manifest otherwise.
      const pad = 4 * 1024 * 1024 + r.int(1, 2000);
      return ['oversize', imageBody(k, { annotations: { pad: 'p'.repeat(pad) } }), MT.OCI_MANIFEST, true];
    },
    () => {
      const depth = r.pick([1_000, 20_000, 200_000, 1_000_000]);
      const nested = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const where = r.pick(['layers', 'annotations', 'extra']);
      const body = imageBody(k).toString('latin1').replace(/}$/, `,"${where === 'extra' ? 'x-nested' : where}":${nested}}`);
      // Only `layers` must be refused: neither the README nor the spec has the registry check annotations.
      return [`deep-nesting ${where}`, Buffer.from(body, 'latin1'), MT.OCI_MANIFEST, where === 'layers'];
    },
    () => {
      const n = r.int(5_000, 25_000);
      return ['huge-array layers', imageBody(k, { layers: Array.from({ length: n }, () => desc(layers[0]!)) }), MT.OCI_MANIFEST, false];
    },
    () => {
      const n = r.int(10_000, 100_000);
      return ['huge-array invalid-entries', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.OCI_INDEX, manifests: Array.from({ length: n }, () => ({})) })), MT.OCI_INDEX, true];
    },
    () => ['schema-version', imageBody(k, { schemaVersion: r.pick([1, 3, '2', null, -1, 2.5, true, undefined]) }), MT.OCI_MANIFEST, true],
    () => ['schema-version-overflow', Buffer.from(imageBody(k).toString().replace('"schemaVersion":2', '"schemaVersion":1e400')), MT.OCI_MANIFEST, true],
    () => {
      const [field, value] = r.pick<[string, unknown]>([
        ['size', -1],
        ['size', 'x'],
        ['size', 1e20],
        ['size', 1.5],
        ['digest', 'sha256:xyz'],
        ['digest', layers[0]!.digest.toUpperCase()],
        ['mediaType', 5],
      ]);
      return [`descriptor-${field}`, imageBody(k, { layers: [{ ...desc(layers[0]!), [field]: value }] }), MT.OCI_MANIFEST, true];
    },
    () => ['descriptor-not-object', imageBody(k, { layers: [r.pick([null, 'str', 5, []])] }), MT.OCI_MANIFEST, true],
    () => ['layers-not-array', imageBody(k, { layers: r.pick([null, {}, 'x', 5]) }), MT.OCI_MANIFEST, true],
    () => ['descriptor-size-differs', imageBody(k, { layers: [{ ...desc(layers[0]!), size: layers[0]!.size + r.pick([1, -1, 1000]) }] }), MT.OCI_MANIFEST, false],
    () => {
      const body = Buffer.from(
        imageBody(k)
          .toString()
          .replace(/}$/, `,"__proto__":{"schemaVersion":3,"layers":null},"constructor":{"prototype":{"polluted":true}}}`),
      );
      return ['prototype-keys', body, MT.OCI_MANIFEST, false];
    },
    () => ['duplicate-keys', Buffer.from(imageBody(k).toString().replace(/}$/, ',"schemaVersion":1,"config":null}')), MT.OCI_MANIFEST, false],
    () => ['subject-invalid', imageBody(k, { subject: { mediaType: MT.OCI_MANIFEST, digest: r.pick(['sha256:bad', 'x', '']), size: 1 } }), MT.OCI_MANIFEST, true],
    () => ['subject-unknown', imageBody(k, { subject: { mediaType: MT.OCI_MANIFEST, digest: `sha256:${r.hex(64)}`, size: 100 } }), MT.OCI_MANIFEST, false],
    () => ['annotations-not-strings', imageBody(k, { annotations: { a: r.pick([1, null, {}, []]) } }), MT.OCI_MANIFEST, false],
    () => ['index-entries', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.OCI_INDEX, manifests: r.pick([null, 'x', [{ digest: k.manifestDigest }], [{ ...desc(config!), platform: 'linux' }]]) })), MT.OCI_INDEX, false],
    () => ['docker-v2-wrong-config-type', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { ...desc(config!), mediaType: 'text/plain' }, layers: layers.map(desc) })), DOCKER_MANIFEST, false],
  ];
  const [variant, body, ct, refuse] = r.pick(cases)();
  const byDigest = r.chance(0.15);
  const target = byDigest ? `${v2(c)}/manifests/${sha256(Buffer.concat([body, Buffer.from(' ')]))}` : `${v2(c)}/manifests/${c.freshTag()}`;
  const headers: Array<[string, string]> = ct === undefined ? [] : [['Content-Type', ct]];
  return {
    family: 'manifests',
    variant: `${variant}${byDigest ? ' by-mismatched-digest' : ''}`,
    steps: [step('PUT', target, { body, headers, refuse: refuse || byDigest, timeoutMs: 10_000 })],
  };
};

const queries: Gen = (r, c) => {
  const k = c.known;
  const b = r.pick(k.blobs);
  const garbage = () =>
    r.pick(['', '%zz', '%00', '%C3%A4', '%FF', 'x'.repeat(r.int(3000, 7000)), '..%2F..', '\u00e4', 'a&last=b', '%', '+', '%2B', '~', 'zzz\x01']);
  const cases: Array<() => [string, Step]> = [
    () => {
      const n = r.pick(['-1', 'abc', '', '99999999999999999999', '0', '1e3', '0x10', '+1', '1.5', '%31', '1&n=2', ' 1', '1 ', '00001', '-0', 'Infinity', 'NaN']);
      const path = r.pick([`${v2(c)}/tags/list`, '/v2/_catalog']);
      return [`page-size ${path.endsWith('_catalog') ? 'catalog' : 'tags'}`, step('GET', `${path}?n=${n}`)];
    },
    () => {
      const path = r.pick([`${v2(c)}/tags/list`, '/v2/_catalog']);
      return [`last ${path.endsWith('_catalog') ? 'catalog' : 'tags'}`, step('GET', `${path}?n=${r.int(1, 3)}&last=${garbage()}${r.chance(0.3) ? `&last=${garbage()}` : ''}`)];
    },
    () => {
      const path = r.pick([`${v2(c)}/tags/list`, '/v2/_catalog', '/v2/', `${v2(c)}/blobs/${b.digest}`, `${v2(c)}/manifests/${k.tag}`]);
      const q = r.pick(['?', '?&&&', '?n', '?=', '?=x', '?__proto__=1', '?constructor=x&hasOwnProperty=1', '?__proto__[n]=1', '?toString=1', '?foo=bar&foo=baz', `?${'a=1&'.repeat(r.int(500, 3000))}`, '?%6E=1', '?n=1;last=x', '?\u00e4=\u00fc']);
      return ['odd-query', step(r.pick(['GET', 'HEAD']), `${path}${q}`)];
    },
    () => ['mount-without-from', step('POST', `${v2(c)}/blobs/uploads/?mount=${b.digest}`)],
    () => ['mount-unknown-digest', step('POST', `${v2(c)}/blobs/uploads/?mount=sha256:${r.hex(64)}&from=${k.repo}`)],
    () => ['mount-invalid-digest', step('POST', `${v2(c)}/blobs/uploads/?mount=${r.pick(['', 'sha256:x', 'x', b.digest.toUpperCase()])}&from=${k.repo}`, { refuse: true })],
    () => ['mount-invalid-from', step('POST', `${v2(c)}/blobs/uploads/?mount=${b.digest}&from=${r.pick(['', 'UPPER', '..', '%2e%2e', 'a//b', '_x'])}`, { refuse: true })],
    () => ['mount-repeated', step('POST', `${v2(c)}/blobs/uploads/?mount=${b.digest}&mount=${b.digest}&from=${k.repo}`)],
    () => ['from-repeated', step('POST', `${v2(c)}/blobs/uploads/?mount=${b.digest}&from=${k.repo}&from=${k.other}`)],
    () => ['mount-and-digest', step('POST', `${v2(c)}/blobs/uploads/?mount=sha256:${r.hex(64)}&digest=${sha256('m')}`, { body: 'm' })],
    () => ['digest-repeated', step('POST', `${v2(c)}/blobs/uploads/?digest=${sha256('d')}&digest=${sha256('d')}`, { body: 'd' })],
    () => ['referrers-artifact-type', step('GET', `${v2(c)}/referrers/${k.manifestDigest}?artifactType=${r.pick(['', 'a&artifactType=b', 'x'.repeat(5000), '%00', 'application/vnd.x'])}`)],
  ];
  const [variant, s] = r.pick(cases)();
  return { family: 'query', variant, steps: [s] };
};

const methods: Gen = (r, c) => {
  const k = c.known;
  const weird = ['TRACE', 'OPTIONS', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'PURGE', 'LINK', 'UNLINK', 'SEARCH', 'REPORT', 'MERGE', 'NOTIFY', 'SUBSCRIBE', 'M-SEARCH', 'ACL', 'QUERY', 'FOO', 'get', 'GETT', 'X'.repeat(200), 'G\x01T', 'PRI'];
  const targets: Array<[string, string, readonly string[]]> = [
    ['base', '/v2/', ['GET', 'HEAD']],
    ['catalog', '/v2/_catalog', ['GET', 'HEAD']],
    ['tags-list', `${v2(c)}/tags/list`, ['GET', 'HEAD']],
    ['manifest', `${v2(c)}/manifests/${k.tag}`, ['GET', 'HEAD', 'PUT', 'DELETE']],
    ['blob', `${v2(c)}/blobs/${k.blobs[1]!.digest}`, ['GET', 'HEAD', 'DELETE']],
    ['upload-start', `${v2(c)}/blobs/uploads/`, ['POST']],
    ['referrers', `${v2(c)}/referrers/${k.manifestDigest}`, ['GET', 'HEAD']],
    ['unknown-path', r.pick([`${v2(c)}/whatever`, `${v2(c)}`, `${v2(c)}/blobs`, `${v2(c)}/manifests`, `${v2(c)}/manifests/`, '/v2/_catalog/x', `${v2(c)}/tags`, `${v2(c)}/blobs/uploads/x/y`]), []],
    ['root', r.pick(['/', '/v2', '/healthz', '/favicon.ico']), ['GET', 'HEAD']],
  ];
  const [where, target, allowed] = r.pick(targets);
  const standard = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((m) => !allowed.includes(m));
  const method = r.chance(0.6) ? r.pick(weird) : r.pick(standard.length ? standard : weird);
  const onV2 = target.startsWith('/v2');
  const refuse = onV2 && method !== 'OPTIONS';
  const body = r.chance(0.3) ? 'body' : undefined;
  return { family: 'methods', variant: `${method.length > 20 ? 'long-method' : method} ${where}`, steps: [step(method, target, { refuse, body })] };
};

/** CONNECT and upgrades take the socket away from HTTP; each in its own small family. */
const tunnels: Gen = (r, c) => {
  const [variant, s] = r.pick<() => [string, Step]>([
    () => ['CONNECT authority-form', step('CONNECT', '127.0.0.1:1', { expect: 'any' })],
    () => ['CONNECT v2', step('CONNECT', '/v2/', { refuse: true })],
    () => ['upgrade websocket', step('GET', '/v2/', { headers: [['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13']] })],
    () => ['upgrade h2c', step('GET', `${v2(c)}/tags/list`, { headers: [['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAAQAAP__']] })],
    () => ['upgrade on upload', step('POST', `${v2(c)}/blobs/uploads/`, { headers: [['Connection', 'Upgrade'], ['Upgrade', 'websocket']] })],
  ])();
  return { family: 'tunnels', variant, steps: [s] };
};

/** A request whose effect would show in the store (delete a tag, open or feed a session, store a manifest). */
function writingTarget(r: Rng, c: GenContext): { what: string; method: string; target: string; payload: Buffer; headers: Array<[string, string]>; session?: string } {
  const k = c.known;
  return r.pick<() => ReturnType<typeof writingTarget>>([
    () => ({ what: 'delete-tag', method: 'DELETE', target: `${v2(c)}/manifests/${r.pick(k.victims)}`, payload: Buffer.alloc(0), headers: [] }),
    () => ({ what: 'upload-start', method: 'POST', target: `${v2(c)}/blobs/uploads/`, payload: Buffer.alloc(0), headers: [] }),
    () => {
      const s = c.session();
      return { what: 'patch', method: 'PATCH', target: `${v2(c)}/blobs/uploads/${s.id}`, payload: Buffer.from(`framed-${r.hex(10)}`), headers: [], session: s.id };
    },
    () => ({ what: 'manifest-put', method: 'PUT', target: `${v2(c)}/manifests/${c.freshTag()}`, payload: k.manifest, headers: [['Content-Type', MT.OCI_MANIFEST]] }),
    () => {
      const payload = Buffer.from(`mono-${r.hex(12)}`);
      return { what: 'monolithic', method: 'POST', target: `${v2(c)}/blobs/uploads/?digest=${sha256(payload)}`, payload, headers: [] };
    },
    () => {
      const s = c.session();
      const payload = Buffer.from(`final-${r.hex(12)}`);
      return { what: 'put-final-chunk', method: 'PUT', target: `${v2(c)}/blobs/uploads/${s.id}?digest=${sha256(Buffer.concat([s.data, payload]))}`, payload, headers: [], session: s.id };
    },
  ])();
}

const framing: Gen = (r, c) => {
  const t = writingTarget(r, c);
  const p = t.payload;
  const te = (v: string): [string, string] => ['Transfer-Encoding', v];
  const cl = (v: string | number): [string, string] => ['Content-Length', String(v)];
  const victim = r.pick(c.known.victims);
  const smuggled = `DELETE ${v2(c)}/manifests/${victim} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n`;
  // [variant, headers, body bytes, must refuse, expect, pipelined request]. An error in the body itself ('body')
  // can only be seen once the body is read, so only a request that uses its body must then be refused: an upload
  // start or a tag delete may be answered before their (ignored) body is read.
  type F = [string, Array<[string, string]>, Buffer, boolean | 'body', 'response' | 'any', boolean?];
  const f = r.pick<() => F>([
    () => ['te-identity', [te('identity')], p, true, 'response'],
    () => ['te-xchunked', [te('xchunked')], chunked(p), true, 'response'],
    () => ['te-chunked-twice-in-list', [te('chunked, chunked')], chunked(chunked(p)), true, 'response'],
    () => ['te-chunked-not-last', [te('chunked, gzip')], chunked(p), true, 'response'],
    () => ['te-unknown-coding', [te(r.pick(['gzip, chunked', 'deflate, chunked', 'x-custom, chunked']))], chunked(p), true, 'response'],
    () => ['te-gzip-only', [te('gzip')], p, true, 'response'],
    () => ['te-empty', [te('')], p, true, 'response'],
    () => ['te-case-or-space', [te(r.pick(['Chunked', 'CHUNKED', ' chunked', 'chunked ', '\tchunked']))], chunked(p), false, 'response'],
    () => ['te-params', [te('chunked;q=1')], chunked(p), true, 'response'],
    () => ['te-header-repeated', [te('chunked'), te(r.pick(['chunked', 'identity']))], chunked(p), true, 'response'],
    () => ['te-with-content-length', [cl(chunked(p).length), te('chunked')], chunked(p), true, 'response'],
    () => ['te-with-content-length-smuggle', [cl(5), te('chunked')], Buffer.concat([Buffer.from('0\r\n\r\n'), Buffer.from(smuggled)]), true, 'response', true],
    () => ['te-invalid-with-content-length', [te('xchunked'), cl(p.length + smuggled.length)], Buffer.concat([p, Buffer.from(smuggled)]), true, 'response'],
    () => ['cl-invalid', [cl(r.pick(['-1', 'abc', '1e3', '0x5', '+5', '5 5', '5,6', '', ' ', '1.0']))], p, true, 'response'],
    () => ['cl-duplicate-same', [cl(p.length), cl(p.length)], p, false, 'response'],
    () => ['cl-duplicate-different', [cl(p.length), cl(p.length + 1)], p, true, 'response'],
    () => ['cl-list-same', [cl(`${p.length}, ${p.length}`)], p, false, 'response'],
    () => ['cl-huge', [cl(r.pick(['99999999999999999999', '18446744073709551616', String(Number.MAX_SAFE_INTEGER + 2)]))], p, true, 'any'],
    () => ['cl-leading-zeros', [cl(`000${p.length}`)], p, false, 'response'],
    () => ['chunk-size-invalid', [te('chunked')], Buffer.from(`${r.pick(['zz', '-1', ' 5', 'ffffffffffffffffffff', '0x5', '5 5', '\x01'])}\r\nhello\r\n0\r\n\r\n`), 'body', 'response'],
    // (`5;=` is not listed: Node's parser takes an empty extension name, and the body's bounds stay certain.)
    () => ['chunk-ext-garbage', [te('chunked')], Buffer.from(`5;${r.pick(['\x01', ';;;', 'a'.repeat(20000)])}\r\nhello\r\n0\r\n\r\n`), 'body', 'response'],
    () => ['chunk-bare-lf', [te('chunked')], Buffer.from('5\nhello\n0\n\n'), 'body', 'any'],
    () => ['chunk-missing-crlf', [te('chunked')], Buffer.from('5\r\nhelloX0\r\n\r\n'), 'body', 'response'],
    () => ['chunk-trailer-invalid', [te('chunked')], Buffer.from(`5\r\nhello\r\n0\r\n${r.pick(['Bad Header: x', ': x', 'X\x01: y'])}\r\n\r\n`), 'body', 'response'],
    () => ['chunk-truncated', [te('chunked')], Buffer.concat([Buffer.from('64\r\n'), p.subarray(0, 5)]), 'body', 'any'],
    () => ['chunk-no-terminator', [te('chunked')], chunked(p).subarray(0, -5), 'body', 'any'],
  ])();
  const [variant, headers, body, refuse, expect, pipelined] = f;
  const s: Step = {
    method: t.method,
    target: t.target,
    wire: [rawRequest(t.method, t.target, { headers: [...t.headers, ...headers], body, length: false, close: !pipelined })],
    expect,
    refuse: refuse === 'body' ? t.payload.length > 0 : refuse,
    settleMs: 40,
    ...(t.session ? { session: t.session } : {}),
    ...(pipelined ? { pipelined: { method: 'DELETE', target: `${v2(c)}/manifests/${victim}` } } : {}),
  };
  // A request that can never complete: our side half-closes, as a client that gave up would.
  if (expect === 'any') s.wire.push({ pauseMs: 50 }, { end: true });
  return { family: 'framing', variant: `${variant} ${t.what}`, steps: [s] };
};

const headersFamily: Gen = (r, c) => {
  const k = c.known;
  type Target = { what: string; method: string; target: string; body?: Buffer; headers: Array<[string, string]> };
  const target = r.pick<() => Target>([
    () => ({ what: 'base', method: 'GET', target: '/v2/', headers: [] }),
    () => ({ what: 'tags-list', method: 'GET', target: `${v2(c)}/tags/list`, headers: [] }),
    () => ({ what: 'blob-head', method: 'HEAD', target: `${v2(c)}/blobs/${k.blobs[1]!.digest}`, headers: [] }),
    () => ({ what: 'upload-start', method: 'POST', target: `${v2(c)}/blobs/uploads/`, body: Buffer.alloc(0), headers: [] }),
    () => ({ what: 'manifest-put', method: 'PUT', target: `${v2(c)}/manifests/${c.freshTag()}`, body: k.manifest, headers: [['Content-Type', MT.OCI_MANIFEST]] }),
    () => ({ what: 'delete-tag', method: 'DELETE', target: `${v2(c)}/manifests/${r.pick(k.victims)}`, headers: [] }),
  ])();
  const { method, body } = target;
  const req = (o: ReqOpts) => rawRequest(method, target.target, { body, ...o, headers: [...target.headers, ...(o.headers ?? [])] });
  // [variant, wire bytes, must refuse, request-target when the variant replaced it]
  type H = [string, Buffer, boolean, string?];
  const [variant, wire, refuse, replaced] = r.pick<() => H>([
    () => ['huge-header', req({ headers: [['X-Pad', 'a'.repeat(r.int(17_000, 70_000))]] }), false],
    () => ['many-headers', req({ headers: Array.from({ length: r.int(500, 3000) }, (_, i): [string, string] => [`X-H${i}`, 'v']) }), false],
    () => ['bad-header-name', req({ headers: [[r.pick(['Bad Header', 'X(', '', 'X\x7f', 'X\xff', 'X\0', 'X-A ', '\x01'])!, 'y']] }), true],
    () => ['bad-header-value', req({ headers: [['X-V', r.pick(['a\0b', 'a\rb', 'a\x7fb', 'a\x01b'])]] }), false],
    () => ['obs-fold', req({ headers: [['X-A', 'a\r\n b']] }), false],
    () => ['bare-lf', Buffer.from(req({}).toString('latin1').replace(/\r\n/g, '\n'), 'latin1'), false],
    () => ['mixed-line-endings', Buffer.from(req({}).toString('latin1').replace('\r\n', '\n'), 'latin1'), false],
    () => ['no-host', req({ host: false }), true],
    () => ['duplicate-host', req({ headers: [['Host', 'other.invalid']] }), true],
    () => ['bad-host', req({ host: false, headers: [['Host', r.pick(['a b', '[::1', '', 'x'.repeat(3000), '127.0.0.1:99999', '\x01'])]] }), false],
    () => ['http-1.0', req({ version: 'HTTP/1.0', host: r.chance(0.5) }), false],
    () => ['version-unsupported', req({ version: r.pick(['HTTP/2.0', 'HTTP/1.2', 'HTTP/3', 'HTTP/0.9', 'HTTP/9.9']) }), false],
    () => ['version-malformed', req({ version: r.pick(['http/1.1', 'HTTP/1.1 ', 'HTTP/1', 'HTTP/1.1x', 'HTTPS/1.1', '']) }), true],
    () => ['http-0.9-line', Buffer.from(`${method} ${target.target}\r\n\r\n`, 'latin1'), true],
    () => ['absolute-form', Buffer.from(req({}).toString('latin1').replace(` ${target.target} `, ` http://127.0.0.1${target.target} `), 'latin1'), false],
    () => ['absolute-form-other-host', Buffer.from(req({}).toString('latin1').replace(` ${target.target} `, ` http://registry.invalid:5000${target.target} `), 'latin1'), false],
    () => ['asterisk-form', Buffer.from(req({}).toString('latin1').replace(` ${target.target} `, ' * '), 'latin1'), false, '*'],
    () => ['request-line-spacing', Buffer.from(req({}).toString('latin1').replace(` ${target.target} `, r.pick([`  ${target.target} `, `\t${target.target}\t`, ` ${target.target}  `])), 'latin1'), false],
    () => ['leading-empty-lines', Buffer.concat([Buffer.from('\r\n\r\n'), req({})]), false],
    () => ['long-url', Buffer.from(req({}).toString('latin1').replace(` ${target.target} `, ` ${target.target}?x=${'a'.repeat(r.int(17_000, 40_000))} `), 'latin1'), false],
    () => ['expect-unknown', req({ headers: [['Expect', r.pick(['bogus', '100-continue-ish', '200-ok'])]] }), false],
    () => ['expect-100-continue', req({ headers: [['Expect', '100-continue']] }), false],
    () => ['connection-odd', req({ headers: [['Connection', r.pick(['keep-alive, close, upgrade', 'x'.repeat(2000), 'Host, Content-Length'])]] }), false],
    () => ['non-ascii-value', req({ headers: [['X-V', toWire('\u00e4\u00f6\u20ac')], ['User-Agent', '\xff\xfe']] }), false],
    () => ['content-type-huge', req({ headers: [['Content-Type', `${MT.OCI_MANIFEST};${'p=1;'.repeat(r.int(1000, 3000))}`]] }), false],
  ])();
  const s: Step = { method, target: replaced ?? target.target, wire: [wire], expect: 'response', refuse, settleMs: 40 };
  return { family: 'headers', variant: `${variant} ${target.what}`, steps: [s] };
};

/** A request whose head and part of its body arrive, then nothing: the client stalls and finally vanishes. */
function stalled(method: string, target: string, headers: Array<[string, string]>, total: number, sent: Buffer, session?: string): Step {
  const head = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map(([h, v]) => `${h}: ${v}\r\n`).join('')}Content-Length: ${total}\r\n\r\n`;
  return { method, target, wire: [Buffer.from(head, 'latin1'), sent, { pauseMs: 500 }], expect: 'any', settleMs: 200, ...(session ? { session } : {}) };
}

/**
 * Slow and idle clients: few and bounded (under a second each). Each runs once per run, at fixed points spread
 * over it, with the random parts (sizes, offsets) from the seed.
 */
export const SLOW: Gen[] = [
  () => ({ family: 'slow', variant: 'idle-before-request-line', steps: [{ method: '-', target: '-', wire: [{ pauseMs: 800 }], expect: 'any', timeoutMs: 100 }] }),
  () => ({
    family: 'slow',
    variant: 'stalled-headers',
    steps: [{ method: 'GET', target: '/v2/', wire: [Buffer.from('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: '), { pauseMs: 600 }], expect: 'any', timeoutMs: 100 }],
  }),
  () => {
    const bytes = rawRequest('GET', '/v2/');
    const wire: Piece[] = [];
    for (let i = 0; i < bytes.length; i += 2) wire.push(bytes.subarray(i, i + 2), { pauseMs: 20 });
    return { family: 'slow', variant: 'slow-headers-completed', steps: [{ method: 'GET', target: '/v2/', wire, expect: 'response' }] };
  },
  () => ({ family: 'slow', variant: 'idle-connections', steps: [{ ...step('GET', '/v2/'), holdIdle: 64 }] }),
  (r, c) => {
    const s = c.session();
    return { family: 'slow', variant: 'stalled-patch-body', steps: [stalled('PATCH', `${v2(c)}/blobs/uploads/${s.id}`, [], r.int(500, 5000), r.bytes(r.int(10, 400)), s.id)] };
  },
  (r, c) => {
    const s = c.session();
    const target = `${v2(c)}/blobs/uploads/${s.id}`;
    const head = Buffer.from(`PATCH ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const body = chunked(r.bytes(r.int(10, 300))).subarray(0, -5);
    return { family: 'slow', variant: 'stalled-chunked-patch', steps: [{ method: 'PATCH', target, wire: [head, body, { pauseMs: 500 }], expect: 'any', settleMs: 200, session: s.id }] };
  },
  (_r, c) => ({
    family: 'slow',
    variant: 'stalled-manifest-put',
    steps: [stalled('PUT', `${v2(c)}/manifests/${c.freshTag()}`, [['Content-Type', MT.OCI_MANIFEST]], c.known.manifest.length + 100, c.known.manifest)],
  }),
  (r, c) => {
    const blob = r.bytes(r.int(200, 4000));
    return { family: 'slow', variant: 'stalled-monolithic-upload', steps: [stalled('POST', `${v2(c)}/blobs/uploads/?digest=${sha256(blob)}`, [], blob.length, blob.subarray(0, blob.length >> 1))] };
  },
  (r, c) => {
    const s = c.session();
    const tail = r.bytes(r.int(50, 500));
    const target = `${v2(c)}/blobs/uploads/${s.id}?digest=${sha256(Buffer.concat([s.data, tail]))}`;
    return { family: 'slow', variant: 'stalled-final-chunk', steps: [stalled('PUT', target, [], tail.length, tail.subarray(0, 20), s.id)] };
  },
];

const FAMILIES: Array<[Gen, number]> = [
  [names, 12],
  [tags, 8],
  [digests, 10],
  [ranges, 7],
  [sessions, 14],
  [manifests, 12],
  [queries, 9],
  [methods, 7],
  [tunnels, 1],
  [framing, 14],
  [headersFamily, 8],
];
const TOTAL_WEIGHT = FAMILIES.reduce((s, [, w]) => s + w, 0);

/** One random case from a family picked by weight. */
export function generate(r: Rng, c: GenContext): Case {
  let x = r.next() * TOTAL_WEIGHT;
  for (const [gen, w] of FAMILIES) {
    x -= w;
    if (x < 0) return gen(r, c);
  }
  return FAMILIES[0]![0](r, c);
}

// ---------------------------------------------------------------------------------------------------------------
// Invariants

/**
 * The OCI error codes README.md promises, read from the table of codes under its "**Errors**" bullet (rows that
 * start with a backticked code), so that the test and the docs cannot drift apart.
 */
export async function readmeErrorCodes(readmePath: string): Promise<Set<string>> {
  const text = await readFile(readmePath, 'utf8');
  const start = text.indexOf('- **Errors**');
  if (start < 0) throw new Error(`${readmePath} has no "- **Errors**" bullet`);
  const codes = new Set([...text.slice(start).matchAll(/^\s*\| `([A-Z][A-Z_]+)` \|/gm)].map((m) => m[1]!));
  if (!codes.has('NAME_INVALID')) throw new Error(`could not read the error codes from README.md's Errors table: ${[...codes].join(', ')}`);
  return codes;
}

const V2 = /^(?:[a-z]+:\/\/[^/]*)?\/v2(?:[/?]|$)/i;
export const onV2 = (target: string) => V2.test(target);

export interface Violation {
  kind:
    | 'status-5xx'
    | 'no-oci-error-body'
    | 'code-not-in-readme'
    | 'accepted-invalid'
    | 'no-response'
    | 'pipelined-after-refusal'
    | 'wrote-on-refusal'
    | 'worker-died';
  status?: number;
  code?: string;
  detail: string;
}

const WRITING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Whether this outcome allows the store to change: a 2xx to a writing method. */
export const mayWrite = (method: string, o: Outcome | undefined) => o !== undefined && isResponse(o) && o.status >= 200 && o.status < 300 && WRITING.has(method);

/** The per-response invariants: status, OCI error body, refusal of invalid input. */
export function checkOutcome(s: Step, o: Outcome, codes: Set<string>, method = s.method, target = s.target): Violation[] {
  const out: Violation[] = [];
  if (!isResponse(o)) {
    if (s.expect === 'response' && onV2(target)) out.push({ kind: 'no-response', detail: `${o.none}; received "${o.received}"` });
    return out;
  }
  const st = o.status;
  if (st >= 500 && st !== 507) out.push({ kind: 'status-5xx', status: st, detail: printable(o.body, 200) });
  if (s.refuse && st < 400) out.push({ kind: 'accepted-invalid', status: st, detail: `answered ${st} to input that must be refused` });
  if (((st >= 400 && st < 500) || st === 507) && onV2(target) && method !== 'HEAD') {
    const ct = o.headers['content-type'] ?? '';
    let code: string | undefined;
    let shapeOk = false;
    try {
      const body = JSON.parse(o.body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
      const e = Array.isArray(body.errors) && body.errors.length > 0 ? body.errors : undefined;
      shapeOk = e !== undefined && e.every((x) => typeof x.code === 'string' && typeof x.message === 'string');
      if (shapeOk) code = e!.map((x) => String(x.code)).find((c) => !codes.has(c)) ?? String(e![0]!.code);
    } catch {
      shapeOk = false;
    }
    if (!/^application\/json\b/.test(ct) || !shapeOk) {
      out.push({ kind: 'no-oci-error-body', status: st, detail: `Content-Type "${ct}", body "${printable(o.body, 120)}"` });
    } else if (code !== undefined && !codes.has(code)) {
      out.push({ kind: 'code-not-in-readme', status: st, code, detail: printable(o.body, 200) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The store, from outside

/**
 * path → "size ino" for every file under blobs/, repositories/ and uploads/ (state/ and tmp/ change freely). The
 * inode shows a file replaced by rename (tags, blobs); mtime is left out, so a chunk cut short and rolled back to
 * the same length counts as no change.
 */
export async function storeSnapshot(dataDir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(join(dataDir, rel), { withFileTypes: true });
    } catch (e) {
      if (errno(e) === 'ENOENT') return;
      throw e;
    }
    await Promise.all(
      entries.map(async (e) => {
        const p = `${rel}/${e.name}`;
        if (e.isDirectory()) {
          out.set(`${p}/`, 'dir');
          return walk(p);
        }
        try {
          const st = await stat(join(dataDir, p));
          out.set(p, `size=${st.size} ino=${st.ino}`);
        } catch (err) {
          if (errno(err) !== 'ENOENT') throw err;
        }
      }),
    );
  };
  await Promise.all(['blobs', 'repositories', 'uploads'].map((d) => walk(d)));
  return out;
}

/** What changed between two snapshots, as "+path", "-path", "~path"; `ignore` drops changes a step may make. */
export function diffSnapshots(a: Map<string, string>, b: Map<string, string>, ignore: (change: string) => boolean = () => false): string[] {
  const out: string[] = [];
  for (const [p, v] of b) if (a.get(p) !== v) out.push(a.has(p) ? `~${p} (${a.get(p)} → ${v})` : `+${p}`);
  for (const p of a.keys()) if (!b.has(p)) out.push(`-${p}`);
  return out.filter((c) => !ignore(c)).sort();
}

/** Human-readable request for a failure report: the first bytes on the wire. */
export function describeStep(s: Step, max = 400): string {
  const bytes = Buffer.concat(s.wire.filter((p): p is Buffer => Buffer.isBuffer(p)));
  return printable(bytes, max);
}

