/** Seconds: small integers keep the per-blob tables compact, and a second is fine enough for recency. */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);
