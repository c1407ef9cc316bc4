import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { DEFAULT_CIPHERS, createSecureContext, type SecureContextOptions } from 'node:tls';
import type { Config } from '../config/schema.js';

export type TlsConfig = NonNullable<Config['tls']>;

/** A certificate, key or client CA that cannot be used; the message names the config key. */
export class TlsError extends Error {}

async function readPem(key: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new TlsError(`tls.${key}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function check(key: string, what: SecureContextOptions, problem: string): void {
  try {
    createSecureContext(what);
  } catch (e) {
    throw new TlsError(`tls.${key}: ${problem} (${(e as Error).message})`);
  }
}

/**
 * Reads and checks the configured PEM files: the options for https.createServer and setSecureContext. Each part is
 * tried on its own first, so that the error names the file that is wrong.
 */
export async function loadTls(tls: TlsConfig): Promise<SecureContextOptions> {
  const [cert, key, ca] = await Promise.all([
    readPem('cert', tls.cert),
    readPem('key', tls.key),
    tls.clientCa === undefined ? undefined : readPem('clientCa', tls.clientCa),
  ]);
  check('cert', { cert }, `${tls.cert} holds no usable PEM certificate`);
  check('key', { key }, `${tls.key} holds no usable PEM private key`);
  check('key', { cert, key }, `${tls.key} is not the private key of ${tls.cert}`);
  if (ca) {
    // createSecureContext skips what does not parse in `ca`: an empty trust list would refuse every client.
    try {
      new X509Certificate(ca);
    } catch (e) {
      throw new TlsError(`tls.clientCa: ${tls.clientCa} holds no usable PEM CA certificate (${(e as Error).message})`);
    }
  }
  return { cert, key, ...(ca ? { ca } : {}), ciphers: CIPHERS, honorCipherOrder: true };
}

/**
 * Node's own suites, with AES-128-GCM chosen first where the client offers it (as Go's TLS does, and so CNCF
 * distribution): as strong a TLS 1.3 suite as the others for a cache's traffic, and a sixth cheaper to encrypt than
 * the AES-256-GCM that OpenSSL's order (Node clients, curl) would pick — every pulled byte passes through it.
 */
const FIRST = 'TLS_AES_128_GCM_SHA256';
const CIPHERS = [FIRST, ...DEFAULT_CIPHERS.split(':').filter((c) => c !== FIRST)].join(':');
