import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/core/errors.js';
import { digestFromHash, digestOf, isDigestAlgorithm, newHash, parseDigest, tryParseDigest } from '../../src/core/digest.js';

const hex256 = createHash('sha256').update('buildcached').digest('hex');
const hex512 = createHash('sha512').update('buildcached').digest('hex');

describe('digests', () => {
  it('parses sha256 with 64 lower-case hex digits', () => {
    expect(parseDigest(`sha256:${hex256}`)).toEqual({ algorithm: 'sha256', hex: hex256, value: `sha256:${hex256}` });
  });

  it('parses sha512 with 128 lower-case hex digits', () => {
    expect(parseDigest(`sha512:${hex512}`)).toEqual({ algorithm: 'sha512', hex: hex512, value: `sha512:${hex512}` });
  });

  it.each([
    ['upper-case hex', `sha256:${hex256.toUpperCase()}`],
    ['one upper-case digit', `sha256:${hex256.slice(0, 63)}A`],
    ['upper-case algorithm', `SHA256:${hex256}`],
    ['63 digits', `sha256:${hex256.slice(1)}`],
    ['65 digits', `sha256:${hex256}0`],
    ['sha512 length on sha256', `sha256:${hex512}`],
    ['sha256 length on sha512', `sha512:${hex256}`],
    ['127 digits for sha512', `sha512:${hex512.slice(1)}`],
    ['unknown algorithm', `md5:${hex256}`],
    ['sha384', `sha384:${'a'.repeat(96)}`],
    ['no algorithm', hex256],
    ['empty hex', 'sha256:'],
    ['empty', ''],
    ['non-hex', `sha256:${'g'.repeat(64)}`],
    ['path traversal', `sha256:../../${'a'.repeat(58)}`],
    ['absolute path', `sha256:/etc/${'a'.repeat(59)}`],
    ['NUL', `sha256:${hex256.slice(0, 63)}\u0000`],
    ['trailing newline', `sha256:${hex256}\n`],
    ['leading space', ` sha256:${hex256}`],
    ['two colons', `sha256:sha256:${hex256}`],
  ])('rejects %s', (_what, input) => {
    expect(tryParseDigest(input)).toBeUndefined();
    expect(() => parseDigest(input)).toThrow(OciError);
    try {
      parseDigest(input);
    } catch (e) {
      expect((e as OciError).code).toBe('DIGEST_INVALID');
    }
  });

  it('computes digests of bytes and of running hashes identically', () => {
    const data = Buffer.from('hello, cache');
    expect(digestOf(data).value).toBe(`sha256:${createHash('sha256').update(data).digest('hex')}`);
    expect(digestOf(data, 'sha512').value).toBe(`sha512:${createHash('sha512').update(data).digest('hex')}`);
    const h = newHash('sha256');
    h.update(data.subarray(0, 5));
    h.update(data.subarray(5));
    expect(digestFromHash(h, 'sha256')).toEqual(digestOf(data));
  });

  it('knows which algorithms it supports', () => {
    expect(isDigestAlgorithm('sha256')).toBe(true);
    expect(isDigestAlgorithm('sha512')).toBe(true);
    expect(isDigestAlgorithm('md5')).toBe(false);
    expect(isDigestAlgorithm('toString')).toBe(false);
  });
});
