import { ListenError } from '../http/server.js';
import { TlsError } from '../http/tls.js';
import { DataDirError } from '../storage/data-dir.js';
import { TierUnavailable } from '../tiers/tier.js';

type ErrorClass = abstract new (...args: never[]) => Error;

/** Failures that starting the daemon expects: each explains itself, and a stack would only bury the message. */
const EXPECTED: ErrorClass[] = [ListenError, TlsError, DataDirError, TierUnavailable];

/** Prints why the process cannot go on, in one line when the failure is an expected one, and exits 1. */
export function exitWith(e: unknown, alsoExpected: ErrorClass[] = []): never {
  const expected = [...EXPECTED, ...alsoExpected].some((c) => e instanceof c);
  process.stderr.write(`buildcached: ${expected ? (e as Error).message : ((e as Error)?.stack ?? String(e))}\n`);
  process.exit(1);
}
