import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/core/errors.js';
import { parseContentRange, parseRange } from '../../src/http/ranges.js';

function errorOf(fn: () => unknown): OciError {
  try {
    fn();
  } catch (e) {
    if (e instanceof OciError) return e;
    throw e;
  }
  throw new Error('expected an OciError');
}

describe('Range (blob reads)', () => {
  it('means the whole blob when absent', () => {
    expect(parseRange(undefined, 100)).toBeUndefined();
  });

  it.each([
    ['bytes=0-0', { start: 0, end: 0 }],
    ['bytes=0-99', { start: 0, end: 99 }],
    ['bytes=10-19', { start: 10, end: 19 }],
    ['bytes=10-', { start: 10, end: 99 }],
    ['bytes=99-', { start: 99, end: 99 }],
    ['bytes=90-1000', { start: 90, end: 99 }],
    ['bytes=-10', { start: 90, end: 99 }],
    ['bytes=-1', { start: 99, end: 99 }],
    ['bytes=-100', { start: 0, end: 99 }],
    ['bytes=-5000', { start: 0, end: 99 }],
    ['  bytes=5-6  ', { start: 5, end: 6 }],
  ])('%s of 100 bytes', (header, range) => {
    expect(parseRange(header, 100)).toEqual(range);
  });

  it('answers several (or overlapping) ranges with the whole blob', () => {
    expect(parseRange('bytes=0-5,10-20', 100)).toBeUndefined();
    expect(parseRange('bytes=0-50,25-75', 100)).toBeUndefined();
  });

  it.each([
    ['start past the end', 'bytes=100-'],
    ['start past the end with an end', 'bytes=100-200'],
    ['end before start', 'bytes=20-10'],
    ['empty suffix', 'bytes=-0'],
    ['no numbers', 'bytes=-'],
    ['garbage', 'bytes=abc'],
    ['negative start', 'bytes=-5-10'],
    ['other unit', 'items=0-5'],
    ['no unit', '0-5'],
    ['empty', ''],
    ['fraction', 'bytes=1.5-3'],
  ])('%s → RANGE_INVALID with the size for Content-Range', (_what, header) => {
    const e = errorOf(() => parseRange(header, 100));
    expect(e.code).toBe('RANGE_INVALID');
    expect(e.detail).toEqual({ size: 100 });
  });

  it('cannot satisfy any range of an empty blob', () => {
    expect(errorOf(() => parseRange('bytes=0-', 0)).code).toBe('RANGE_INVALID');
    expect(errorOf(() => parseRange('bytes=-1', 0)).code).toBe('RANGE_INVALID');
  });
});

describe('Content-Range (upload chunks)', () => {
  it('is optional', () => {
    expect(parseContentRange(undefined)).toBeUndefined();
  });

  it.each([
    ['0-0', { start: 0, end: 0 }],
    ['0-1023', { start: 0, end: 1023 }],
    ['1024-2047', { start: 1024, end: 2047 }],
    ['bytes 0-9/10', { start: 0, end: 9 }],
    ['bytes 0-9/*', { start: 0, end: 9 }],
    ['bytes=5-9', { start: 5, end: 9 }],
    [' 3-4 ', { start: 3, end: 4 }],
  ])('parses %s', (header, range) => {
    expect(parseContentRange(header)).toEqual(range);
  });

  it.each([
    ['end before start', '10-5'],
    ['negative', '-1-5'],
    ['open end', '5-'],
    ['suffix form', '-5'],
    ['garbage', 'abc'],
    ['empty', ''],
    ['several ranges', '0-1,2-3'],
    ['unsafe integer', '0-99999999999999999999'],
    ['items unit', 'items 0-9/10'],
  ])('rejects %s as out of order (416)', (_what, header) => {
    expect(errorOf(() => parseContentRange(header)).code).toBe('UPLOAD_OUT_OF_ORDER');
  });
});
