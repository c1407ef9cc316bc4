import { OciError } from '../core/errors.js';
import { tryParseDigest } from '../core/digest.js';
import { BUILDKIT_CACHE_CONFIG, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST, baseMediaType } from './media-types.js';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  /** Foreign (non-distributable) layers name URLs and are never pushed, so they are not required to exist. */
  urls?: string[];
}

/** What the store keeps about a manifest; everything needed to serve, list referrers and compute reachability. */
export interface ParsedManifest {
  mediaType: string;
  /** Descriptors that must exist in the store: config, layers, or index entries (which for BuildKit's cache
   *  index are layer blobs and a cache config, not manifests: any blob is accepted). */
  references: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function invalid(message: string, detail?: unknown): never {
  throw new OciError('MANIFEST_INVALID', message, detail);
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) invalid(`${where} is not a descriptor object`);
  const { mediaType, digest, size, artifactType, annotations, urls } = v;
  if (typeof mediaType !== 'string' || mediaType.length === 0) invalid(`${where}.mediaType is missing`);
  if (typeof digest !== 'string' || !tryParseDigest(digest)) invalid(`${where}.digest is not a valid digest`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) invalid(`${where}.size is not a size`);
  const d: Descriptor = { mediaType, digest, size };
  if (typeof artifactType === 'string') d.artifactType = artifactType;
  if (isObject(annotations)) d.annotations = stringMap(annotations, `${where}.annotations`);
  if (Array.isArray(urls) && urls.length > 0) d.urls = urls.filter((u): u is string => typeof u === 'string');
  return d;
}

function stringMap(v: Json, where: string): Record<string, string> {
  for (const [k, val] of Object.entries(v)) if (typeof val !== 'string') invalid(`${where}.${k} is not a string`);
  return v as Record<string, string>;
}

/**
 * Decides the manifest's media type from the request's Content-Type and the body's own `mediaType`. They must agree
 * when both are given; a missing Content-Type (or a generic JSON one) falls back to the body, then to its shape.
 */
function resolveMediaType(contentType: string | undefined, doc: Json): string {
  const declared = baseMediaType(contentType);
  const own = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const fromHeader = declared && MANIFEST_MEDIA_TYPES.has(declared) ? declared : undefined;
  if (fromHeader && own && own !== fromHeader) {
    invalid(`mediaType "${own}" in the manifest does not match Content-Type "${fromHeader}"`);
  }
  const chosen = fromHeader ?? own ?? (Array.isArray(doc.manifests) ? OCI_INDEX : isObject(doc.config) ? OCI_MANIFEST : undefined);
  if (!chosen || !MANIFEST_MEDIA_TYPES.has(chosen)) {
    invalid(`unsupported manifest media type "${declared ?? own ?? 'none'}"`, {
      supported: [...MANIFEST_MEDIA_TYPES],
    });
  }
  return chosen;
}

/** Parses and validates a manifest body (pure: bytes in, structure out). */
export function parseManifest(body: Uint8Array, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch {
    invalid('manifest is not valid JSON');
  }
  if (!isObject(doc)) invalid('manifest is not a JSON object');
  if (doc.schemaVersion !== 2) invalid('only schemaVersion 2 manifests are supported');
  const mediaType = resolveMediaType(contentType, doc);
  const references: Descriptor[] = [];
  if (INDEX_MEDIA_TYPES.has(mediaType)) {
    if (!Array.isArray(doc.manifests)) invalid('an index needs a "manifests" array');
    doc.manifests.forEach((m, i) => references.push(parseDescriptor(m, `manifests[${i}]`)));
  } else {
    if (!isObject(doc.config)) invalid('an image manifest needs a "config" descriptor');
    references.push(parseDescriptor(doc.config, 'config'));
    if (doc.layers !== undefined && !Array.isArray(doc.layers)) invalid('"layers" must be an array');
    ((doc.layers as unknown[] | undefined) ?? []).forEach((l, i) => references.push(parseDescriptor(l, `layers[${i}]`)));
  }
  const parsed: ParsedManifest = { mediaType, references };
  if (doc.subject !== undefined) parsed.subject = parseDescriptor(doc.subject, 'subject');
  if (typeof doc.artifactType === 'string') parsed.artifactType = doc.artifactType;
  if (isObject(doc.annotations)) parsed.annotations = stringMap(doc.annotations, 'annotations');
  return parsed;
}

/** The artifact type a referrers listing reports: explicit, else the config media type of an image manifest. */
export function referrerArtifactType(m: ParsedManifest): string | undefined {
  if (m.artifactType) return m.artifactType;
  return INDEX_MEDIA_TYPES.has(m.mediaType) ? undefined : m.references[0]?.mediaType;
}

/** Digests that must be present before the manifest may be stored (foreign layers excepted). */
/** The size of the BuildKit cache config a manifest lists (as its config, or as an index entry), if any. */
export function cacheConfigSize(m: ParsedManifest): number | undefined {
  return m.references.find((d) => baseMediaType(d.mediaType) === BUILDKIT_CACHE_CONFIG)?.size;
}

export function requiredDigests(m: ParsedManifest): string[] {
  return [...new Set(m.references.filter((d) => !d.urls).map((d) => d.digest))];
}
