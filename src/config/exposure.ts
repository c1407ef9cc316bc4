import { isIP } from 'node:net';

/** 127.0.0.0/8, ::1 (also as an IPv4-mapped 127.x), and the name localhost. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || h.startsWith('::ffff:127.');
  return false;
}

/**
 * Why the daemon must not listen on `listenHost` as configured, or undefined when it may: beyond loopback, anyone
 * who reaches the port reads and overwrites every cache, unless TLS or auth is on or the operator said the
 * network in between is trusted.
 */
export function insecureListenProblem(listenHost: string, hasTls: boolean, hasAuth: boolean, allowInsecure: boolean): string | undefined {
  if (hasTls || hasAuth || allowInsecure || isLoopback(listenHost)) return undefined;
  return (
    `refusing to listen on ${listenHost} beyond loopback with neither TLS nor authentication: ` +
    'set tls (cert, key), or auth, or allowInsecure: true (env BUILDCACHED_ALLOW_INSECURE=true) on a trusted network'
  );
}
