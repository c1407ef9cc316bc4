import { isValidName } from '../registry/names.js';

/**
 * Repository patterns of the auth rules: `/`-separated segments where `*` matches within one segment, a `**`
 * segment matches any number of segments (zero too: `team/**` covers `team` itself), and `{claim}` is replaced by
 * that claim of the caller's OIDC token (`{repository}/**` lets a job of acme/web reach acme/web/... only).
 */
export type Claims = Readonly<Record<string, unknown>>;

const PLACEHOLDER = /\{([^{}]+)\}/g;
/** Literal characters of a repository name, `*` and placeholders; nothing that could mean more than it says. */
const SEGMENT = /^(?:[a-z0-9._-]|\*|\{[^{}]+\})+$/;

/** Splits on `/` outside braces: a claim's name may contain one (CircleCI's `oidc.circleci.com/project-id`). */
function segments(pattern: string): string[] {
  return pattern.split(/\/(?![^{]*\})/);
}

/** Why `pattern` is not a valid repository pattern, or undefined when it is. */
export function patternProblem(pattern: string): string | undefined {
  if (pattern === '') return 'is empty';
  for (const seg of segments(pattern)) {
    if (seg === '**') continue;
    if (seg === '' || !SEGMENT.test(seg)) return `has an invalid segment "${seg}" (allowed: a-z 0-9 . _ -, *, **, {claim})`;
    if (seg.includes('**')) return `uses ** inside a segment ("${seg}"); ** must be a whole segment`;
  }
  return undefined;
}

export function placeholders(pattern: string): string[] {
  return [...pattern.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');

/**
 * A claim as it may appear in a repository name: lower-cased (registry names are; GitHub's `repository` claim keeps
 * the owner's capitals), and only when the result is a valid name, so that a claim can never widen a pattern.
 */
function claimText(claims: Claims, key: string): string | undefined {
  const v = claims[key];
  if (typeof v !== 'string' && typeof v !== 'number') return undefined;
  const text = String(v).toLowerCase();
  return isValidName(text) ? text : undefined;
}

function segmentRegex(seg: string, claims: Claims): string | undefined {
  let out = '';
  let missing = false;
  let rest = seg;
  while (rest !== '') {
    const open = rest.indexOf('{');
    const star = rest.indexOf('*');
    const next = [open, star].filter((i) => i >= 0).sort((a, b) => a - b)[0];
    if (next === undefined) {
      out += escape(rest);
      break;
    }
    out += escape(rest.slice(0, next));
    if (next === star) {
      out += '[^/]*';
      rest = rest.slice(next + 1);
    } else {
      const close = rest.indexOf('}', next);
      const value = claimText(claims, rest.slice(next + 1, close));
      if (value === undefined) missing = true;
      else out += escape(value);
      rest = rest.slice(close + 1);
    }
  }
  return missing ? undefined : out;
}

/** The pattern as an anchored regex for this caller's claims; undefined when a claim it needs is absent. */
function patternRegex(pattern: string, claims: Claims = {}): RegExp | undefined {
  const segs = segments(pattern);
  let re = '';
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    if (seg === '**') {
      re += segs.length === 1 ? '.+' : i === 0 ? '(?:[^/]+/)*' : '(?:/[^/]+)*';
      continue;
    }
    const part = segmentRegex(seg, claims);
    if (part === undefined) return undefined;
    // After a leading `**` the separator is inside its group already.
    if (i > 0 && !(i === 1 && segs[0] === '**')) re += '/';
    re += part;
  }
  return new RegExp(`^${re}$`);
}

/** A pattern compiled once; patterns with placeholders are completed per caller. */
export class RepositoryPattern {
  private readonly fixed: RegExp | undefined;
  readonly claims: string[];

  constructor(readonly source: string) {
    this.claims = placeholders(source);
    this.fixed = this.claims.length === 0 ? patternRegex(source) : undefined;
  }

  matches(repo: string, claims: Claims = {}): boolean {
    const re = this.fixed ?? patternRegex(this.source, claims);
    return re !== undefined && re.test(repo);
  }
}
