import type { RequestOptions } from 'node:http';

/** Where a node:http request reaches the admin listener: `unix:/path` or `http(s)://host:port`. */
export function adminTarget(target: string): RequestOptions {
  if (target.startsWith('unix:')) return { socketPath: target.slice('unix:'.length) };
  const u = new URL(target);
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port) };
}
