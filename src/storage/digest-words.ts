/** A sha256 digest as eight 32-bit words (big-endian halves of its hex), the compact form in-memory indexes keep. */
export const SHA256_WORDS = 8;

const PREFIX = 'sha256:';
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) HEX_VALUE['0123456789abcdef'.charCodeAt(i)] = i;

/** Writes the words of a canonical `sha256:<64 lowercase hex>` digest at `out[offset]`; false (nothing useful
 *  written) for any other string. */
export function packSha256(digest: string, out: Uint32Array, offset: number): boolean {
  if (digest.length !== PREFIX.length + 64 || !digest.startsWith(PREFIX)) return false;
  for (let w = 0; w < SHA256_WORDS; w++) {
    let v = 0;
    for (let j = 0, at = PREFIX.length + 8 * w; j < 8; j++, at++) {
      const c = digest.charCodeAt(at);
      const x = c < 128 ? HEX_VALUE[c]! : -1;
      if (x < 0) return false;
      v = (v << 4) | x;
    }
    out[offset + w] = v;
  }
  return true;
}

const bytes = Buffer.alloc(4 * SHA256_WORDS);

export function unpackSha256(words: Uint32Array, offset: number): string {
  for (let w = 0; w < SHA256_WORDS; w++) bytes.writeUInt32BE(words[offset + w]!, 4 * w);
  return PREFIX + bytes.toString('hex');
}
