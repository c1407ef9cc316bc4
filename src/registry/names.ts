import { OciError } from '../core/errors.js';
import { truncate, tryParseDigest, type Digest } from '../core/digest.js';

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const MAX_NAME = 255;

/**
 * Repository names are validated before any path is built from them. The grammar excludes `.`/`..` segments,
 * empty segments, upper case and every character that could escape the data directory.
 */
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME && NAME_RE.test(name);
}

export function parseName(name: string): string {
  if (!isValidName(name)) {
    throw new OciError('NAME_INVALID', `invalid repository name "${truncate(name)}"`, { name: truncate(name) });
  }
  return name;
}

export const isValidTag = (tag: string): boolean => TAG_RE.test(tag);

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/** A manifest reference is a digest when it contains `:` (tags cannot), a tag otherwise. */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) {
    const digest = tryParseDigest(ref);
    if (!digest) throw new OciError('DIGEST_INVALID', `invalid digest "${truncate(ref)}"`, { digest: truncate(ref) });
    return { kind: 'digest', digest };
  }
  if (!isValidTag(ref)) throw new OciError('TAG_INVALID', `invalid tag "${truncate(ref)}"`, { tag: truncate(ref) });
  return { kind: 'tag', tag: ref };
}

/**
 * A reference used to look a manifest up. A string that cannot be a tag cannot name a stored manifest either, so
 * it is MANIFEST_UNKNOWN (404), as the conformance suite expects; a malformed digest stays DIGEST_INVALID.
 */
export function lookupReference(ref: string): Reference {
  try {
    return parseReference(ref);
  } catch (e) {
    if (e instanceof OciError && e.code === 'TAG_INVALID') {
      throw new OciError('MANIFEST_UNKNOWN', `manifest ${truncate(ref)} is unknown`, { reference: truncate(ref) });
    }
    throw e;
  }
}
