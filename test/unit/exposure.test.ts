import { describe, expect, it } from 'vitest';
import { insecureListenProblem, isLoopback } from '../../src/config/exposure.js';

describe('insecureListenProblem', () => {
  it('allows loopback without TLS or auth', () => {
    for (const host of ['127.0.0.1', '127.8.9.10', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST']) {
      expect(isLoopback(host), host).toBe(true);
      expect(insecureListenProblem(host, false, false, false), host).toBeUndefined();
    }
  });

  it('refuses any other host with neither TLS nor auth, naming the keys to set', () => {
    for (const host of ['0.0.0.0', '::', '10.0.0.5', '128.0.0.1', '::ffff:10.0.0.1', 'cache.internal', 'localhost.example']) {
      expect(isLoopback(host), host).toBe(false);
      const why = insecureListenProblem(host, false, false, false);
      expect(why, host).toContain(host);
      for (const key of ['tls', 'auth', 'allowInsecure: true']) expect(why).toContain(key);
    }
  });

  it('allows them with TLS, with auth, or with allowInsecure', () => {
    expect(insecureListenProblem('0.0.0.0', true, false, false)).toBeUndefined();
    expect(insecureListenProblem('0.0.0.0', false, true, false)).toBeUndefined();
    expect(insecureListenProblem('0.0.0.0', false, false, true)).toBeUndefined();
  });
});
