import { join } from 'node:path';
import type { Digest } from '../core/digest.js';

/**
 * Where everything lives under the data directory. Every path is built from validated names, tags, digests and
 * upload ids only. Repository internals use `_`-prefixed folders, which no valid name component can start with,
 * so repository `a/_tags` cannot collide with the tags of `a`.
 */
export class Layout {
  readonly blobs: string;
  readonly uploads: string;
  readonly repositories: string;
  readonly tmp: string;
  readonly pidFile: string;
  readonly state: string;
  /** Sizes and last uses of all blobs, so a start-up need not stat every blob file. */
  readonly blobIndex: string;
  /** The secret that signs the bearer tokens the daemon issues (auth), shared by its workers and restarts. */
  readonly tokenKey: string;
  /** The configuration the primary validated, for its workers (mode 0600: it may hold the admin token). */
  readonly workerConfig: string;

  constructor(readonly root: string) {
    this.blobs = join(root, 'blobs');
    this.uploads = join(root, 'uploads');
    this.repositories = join(root, 'repositories');
    this.tmp = join(root, 'tmp');
    this.pidFile = join(root, 'daemon.json');
    this.state = join(root, 'state');
    this.blobIndex = join(this.state, 'blobs.index');
    this.tokenKey = join(this.state, 'token.key');
    this.workerConfig = join(this.state, 'worker-config.json');
  }

  blobDir(d: Digest): string {
    return join(this.blobs, d.algorithm, d.hex.slice(0, 2));
  }

  blobPath(d: Digest): string {
    return join(this.blobDir(d), d.hex);
  }

  uploadDir(id: string): string {
    return join(this.uploads, id);
  }

  repository(name: string): string {
    return join(this.repositories, name);
  }

  manifestMeta(name: string, d: Digest): string {
    return join(this.repositories, name, '_manifests', d.algorithm, `${d.hex}.json`);
  }

  /** The repository's blob membership log: digests uploaded or mounted into it, one a line. */
  blobLog(name: string): string {
    return join(this.repositories, name, '_blobs');
  }

  tag(name: string, tag: string): string {
    return join(this.repositories, name, '_tags', tag);
  }
}
