import { describe, expect, it } from 'vitest';
import { framingProblem } from '../../src/http/framing.js';

const req = (headers: Array<[string, string]>, httpVersion = '1.1') => ({ httpVersion, rawHeaders: [['Host', 'h'] as [string, string], ...headers].flat() });

describe('framingProblem', () => {
  it('accepts no body, one decimal Content-Length, or chunked alone', () => {
    expect(framingProblem(req([]))).toBeUndefined();
    expect(framingProblem(req([['Content-Length', '0']]))).toBeUndefined();
    expect(framingProblem(req([['content-length', '0042']]))).toBeUndefined();
    expect(framingProblem(req([['Transfer-Encoding', 'chunked']]))).toBeUndefined();
    expect(framingProblem(req([['Transfer-Encoding', ' CHUNKED ']]))).toBeUndefined();
    expect(framingProblem(req([['Content-Length', '3']], '1.0'))).toBeUndefined();
    expect(framingProblem({ httpVersion: '1.0', rawHeaders: [] })).toBeUndefined();
  });

  it.each([
    ['xchunked'],
    ['identity'],
    [''],
    ['gzip, chunked'],
    ['chunked, gzip'],
    ['chunked,chunked'],
    [',chunked'],
  ])('refuses Transfer-Encoding: %j', (te) => {
    expect(framingProblem(req([['Transfer-Encoding', te]]))?.header).toBe('transfer-encoding');
  });

  it('refuses Transfer-Encoding repeated, on HTTP/1.0, or with Content-Length', () => {
    expect(framingProblem(req([['Transfer-Encoding', 'chunked'], ['transfer-encoding', 'chunked']]))?.header).toBe('transfer-encoding');
    expect(framingProblem(req([['Transfer-Encoding', 'chunked']], '1.0'))?.header).toBe('transfer-encoding');
    expect(framingProblem(req([['Content-Length', '1'], ['Transfer-Encoding', 'chunked']]))?.header).toBe('content-length');
  });

  it.each([['+1'], ['-1'], ['0x1'], ['1e3'], ['1.0'], ['1, 1'], [''], ['9007199254740993'], ['99999999999999999999']])(
    'refuses Content-Length: %j',
    (cl) => {
      expect(framingProblem(req([['Content-Length', cl]]))?.header).toBe('content-length');
    },
  );

  it('refuses Content-Length repeated, with the same value or not', () => {
    expect(framingProblem(req([['Content-Length', '1'], ['Content-Length', '1']]))?.header).toBe('content-length');
    expect(framingProblem(req([['Content-Length', '1'], ['content-length', '2']]))?.header).toBe('content-length');
  });

  it('refuses an HTTP/1.1 request without exactly one Host', () => {
    expect(framingProblem({ httpVersion: '1.1', rawHeaders: [] })?.header).toBe('host');
    expect(framingProblem(req([['Host', 'other']]))?.header).toBe('host');
  });
});
