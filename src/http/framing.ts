import type { IncomingMessage } from 'node:http';
import type { FramingProblem } from './oci-errors.js';

/** The headers of a request whose body boundary must be certain before anything acts on it. */
export type FramedRequest = Pick<IncomingMessage, 'httpVersion' | 'rawHeaders'>;

function values(req: FramedRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === name) out.push(req.rawHeaders[i + 1]!.trim());
  }
  return out;
}

/**
 * Why the body boundary (or the target) of this request is not certain, or undefined when it is. Node's parser
 * emits a request as soon as its headers are complete and only then fails on some framings (an unknown
 * transfer-coding), so a request has to pass this before any handler runs: the only body framings accepted are
 * one plain decimal Content-Length, or `Transfer-Encoding: chunked` alone, once, on HTTP/1.1. Node's strict
 * parser refuses most of the rest itself; this check does not depend on that. An HTTP/1.1 request has exactly
 * one Host (RFC 9112 §3.2).
 */
export function framingProblem(req: FramedRequest): FramingProblem | undefined {
  // Node takes a request line without a version for HTTP/0.9, which has no headers to frame anything with.
  if (req.httpVersion !== '1.1' && req.httpVersion !== '1.0') return { header: 'version', message: `HTTP/${req.httpVersion} is not supported` };
  const hosts = values(req, 'host').length;
  if (hosts > 1 || (hosts === 0 && req.httpVersion === '1.1')) return { header: 'host', message: 'an HTTP/1.1 request needs exactly one Host header' };
  const te = values(req, 'transfer-encoding');
  const cl = values(req, 'content-length');
  if (te.length > 0) {
    if (cl.length > 0) return { header: 'content-length', message: 'Content-Length together with Transfer-Encoding' };
    if (req.httpVersion !== '1.1') return { header: 'transfer-encoding', message: `Transfer-Encoding in an HTTP/${req.httpVersion} request` };
    if (te.length > 1 || te[0]!.toLowerCase() !== 'chunked') {
      return { header: 'transfer-encoding', message: 'the only transfer coding supported is "chunked", alone' };
    }
  }
  if (cl.some((v) => !/^\d+$/.test(v) || !Number.isSafeInteger(Number(v)))) {
    return { header: 'content-length', message: 'Content-Length is not a decimal byte count' };
  }
  if (cl.length > 1) return { header: 'content-length', message: 'more than one Content-Length' };
  return undefined;
}
