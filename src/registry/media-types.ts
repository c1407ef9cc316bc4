export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const OCI_EMPTY_JSON = 'application/vnd.oci.empty.v1+json';
/** BuildKit's cache config: what its importer reads first (and refuses when over 1 MiB). */
export const BUILDKIT_CACHE_CONFIG = 'application/vnd.buildkit.cacheconfig.v0';

/** The manifest media types this registry stores. Index kinds list `manifests`, image kinds list config + layers. */
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST]);
export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([OCI_INDEX, DOCKER_LIST]);

/** `application/json; charset=utf-8` → `application/json`. */
export function baseMediaType(contentType: string | undefined): string | undefined {
  const base = contentType?.split(';', 1)[0]?.trim().toLowerCase();
  return base ? base : undefined;
}
