/** The analytics are bounded (analytics.maxReferences): past the cap the least recently used reference goes. */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { OCI_CONFIG, OCI_MANIFEST, blob, pushBlob, putManifest, sha256, startRegistry, type TestRegistry } from './harness.js';

let reg: TestRegistry;
beforeAll(async () => {
  reg = await startRegistry({ analytics: { maxReferences: 2 } });
});
afterAll(async () => {
  await reg.close();
});

it('tracks at most maxReferences references, dropping the least recently used', async () => {
  const config = Buffer.from('{}');
  const layer = blob(100);
  await pushBlob(reg, 'app', config);
  await pushBlob(reg, 'app', layer.data);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: 100 }],
    }),
  );
  for (const tag of ['a', 'b', 'c']) await putManifest(reg, 'app', tag, manifest, OCI_MANIFEST);
  const tracked = reg.store.references.entries().map((e) => `${e.repo}:${e.tag}`);
  expect(tracked.sort()).toEqual(['app:b', 'app:c']);
  const report = await reg.store.admin.references();
  expect(report.find((r) => r.tag === 'a')).toMatchObject({ pushes: 0, hitRate: null });
  expect(report.find((r) => r.tag === 'c')).toMatchObject({ pushes: 1 });
});
