import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { requestPath } from '../../src/http/exchange.js';

const pathOf = (url: string) => requestPath({ url } as IncomingMessage);

describe('the request path the front door routes on', () => {
  it('is the target without its query', () => {
    expect(pathOf('/v2/org/app/blobs/sha256:ab')).toBe('/v2/org/app/blobs/sha256:ab');
    expect(pathOf('/v2/org/app/blobs/uploads/x?digest=sha256:ab&n=1')).toBe('/v2/org/app/blobs/uploads/x');
    expect(pathOf('/v2/?')).toBe('/v2/');
  });

  it('is taken from the path on in the absolute form (RFC 9112 §3.2.2), as express routes it', () => {
    expect(pathOf('http://cache.example:5000/v2/org/app/manifests/main?x=1')).toBe('/v2/org/app/manifests/main');
    expect(pathOf('HTTPS://cache.example/v2/')).toBe('/v2/');
    expect(pathOf('http://cache.example')).toBe('/');
  });

  it('keeps what the path check must see: encodings, dot segments and doubled slashes stay as sent', () => {
    expect(pathOf('/v2/org/%2e%2e/blobs/x')).toBe('/v2/org/%2e%2e/blobs/x');
    expect(pathOf('/v2/org/../blobs/x')).toBe('/v2/org/../blobs/x');
    expect(pathOf('http://h//v2//x')).toBe('//v2//x');
  });
});
