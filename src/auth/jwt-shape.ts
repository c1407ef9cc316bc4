import { decodeJwt } from 'jose';

/**
 * The `iss` of something shaped like a JWT (three base64url parts with a JSON payload), unverified: only to choose
 * who verifies it. Undefined for anything else, such as a password, at the cost of one regex test.
 */
export function jwtIssuer(token: string): string | undefined {
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) return undefined;
  try {
    const iss = decodeJwt(token).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}
