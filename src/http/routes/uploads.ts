import { Router, type Request, type Response } from 'express';
import { OciError } from '../../core/errors.js';
import type { Registry } from '../../registry/registry.js';
import type { ChunkOptions, UploadSession } from '../../storage/upload-store.js';
import { contentLength, drain, hasBody } from '../body.js';
import { nameParam, queryDigest, queryParam } from '../params.js';
import { parseContentRange } from '../ranges.js';
import { parseName } from '../../registry/names.js';
import { accessOf } from '../access.js';

export const UPLOAD_START_PATH = /^\/v2\/(.+)\/blobs\/uploads\/?$/;
export const UPLOAD_SESSION_PATH = /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/;

function sessionHeaders(res: Response, s: UploadSession, offset: number): void {
  res.set({
    Location: `/v2/${s.repository}/blobs/uploads/${s.id}`,
    Range: `0-${Math.max(0, offset - 1)}`,
    'Docker-Upload-UUID': s.id,
    'Content-Length': '0',
  });
}

function created(res: Response, name: string, digest: string): void {
  res.status(201).set({ Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' }).end();
}

/** What a chunk request declares about itself: where it starts (Content-Range) and how long it is. */
function chunkOptions(req: Request): ChunkOptions {
  const range = parseContentRange(req.headers['content-range']);
  const length = contentLength(req);
  if (!range) return length === undefined ? {} : { length };
  const span = range.end - range.start + 1;
  if (length !== undefined && length !== span) {
    throw new OciError('SIZE_INVALID', `Content-Range spans ${span} bytes but Content-Length is ${length}`);
  }
  return { start: range.start, length: span };
}

export function uploadRoutes(registry: Registry): Router {
  const r = Router();

  r.post(UPLOAD_START_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/uploads/';
    const name = nameParam(req);
    res.locals.repo = name;
    const mount = queryDigest(req, 'mount');
    if (mount) {
      const from = queryParam(req, 'from', 'NAME_INVALID');
      if (from !== undefined) parseName(from);
      // A source the caller may not read is no error: like a blob it lacks, the client just uploads (BuildKit
      // fails a push on a 401 or 403 here).
      const readable = from === undefined || accessOf(res).can(from, 'pull');
      if (readable && (await registry.canMount(name, mount, from))) {
        await drain(req);
        return created(res, name, mount.value);
      }
    }
    const digest = queryDigest(req, 'digest');
    if (digest && !mount) {
      // Monolithic upload: the whole blob in this request.
      await registry.putBlob(name, req, digest, contentLength(req));
      return created(res, name, digest.value);
    }
    await drain(req);
    const session = await registry.startUpload(name, req.socket.remoteAddress ?? '');
    sessionHeaders(res, session, 0);
    res.status(202).end();
  });

  r.get(UPLOAD_SESSION_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/uploads/<id>';
    const name = nameParam(req);
    res.locals.repo = name;
    const session = await registry.upload(name, String(req.params[1]));
    sessionHeaders(res, session, session.offset);
    // RFC 9110 §8.6: a 204 carries no Content-Length.
    res.removeHeader('Content-Length');
    res.status(204).end();
  });

  r.patch(UPLOAD_SESSION_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/uploads/<id>';
    const name = nameParam(req);
    res.locals.repo = name;
    const session = await registry.upload(name, String(req.params[1]));
    const opts = chunkOptions(req);
    const offset = await registry.appendChunk(session, req, opts);
    sessionHeaders(res, session, offset);
    res.status(202).end();
  });

  r.put(UPLOAD_SESSION_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/uploads/<id>';
    const name = nameParam(req);
    res.locals.repo = name;
    const digest = queryDigest(req, 'digest');
    if (!digest) throw new OciError('DIGEST_INVALID', 'completing an upload needs ?digest=');
    const session = await registry.upload(name, String(req.params[1]));
    const body = hasBody(req) ? req : undefined;
    if (!body) await drain(req);
    await registry.finishUpload(session, digest, body, body ? chunkOptions(req) : {});
    created(res, name, digest.value);
  });

  r.delete(UPLOAD_SESSION_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/uploads/<id>';
    const name = nameParam(req);
    res.locals.repo = name;
    const session = await registry.upload(name, String(req.params[1]));
    await drain(req);
    await registry.cancelUpload(session);
    res.status(204).end();
  });
  return r;
}
