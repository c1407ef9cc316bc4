import { createHash, type Hash } from 'node:crypto';
import { OciError } from './errors.js';

/** Digest algorithms we accept, with the exact hex length each must have. */
const HEX_LENGTH = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof HEX_LENGTH;

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  /** The canonical `algorithm:hex` form; also the key of every index. */
  readonly value: string;
}

const DIGEST_RE = /^(sha256|sha512):([a-f0-9]+)$/;

/** Parses a digest or returns undefined; never throws, so callers choose the error. */
export function tryParseDigest(input: string): Digest | undefined {
  const m = DIGEST_RE.exec(input);
  if (!m) return undefined;
  const algorithm = m[1] as DigestAlgorithm;
  if (m[2]!.length !== HEX_LENGTH[algorithm]) return undefined;
  return { algorithm, hex: m[2]!, value: input };
}

export function parseDigest(input: string): Digest {
  const d = tryParseDigest(input);
  if (!d) throw new OciError('DIGEST_INVALID', `invalid digest "${truncate(input)}"`, { digest: truncate(input) });
  return d;
}

export const isDigestAlgorithm = (s: string): s is DigestAlgorithm => Object.hasOwn(HEX_LENGTH, s);

export function newHash(algorithm: DigestAlgorithm = 'sha256'): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(data).digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

export function digestFromHash(hash: Hash, algorithm: DigestAlgorithm): Digest {
  const hex = hash.digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

/** Keeps hostile input out of error messages and logs at a bounded size. */
export function truncate(s: string, max = 200): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
