#!/usr/bin/env node
// npm runs `prepare` on every `npm ci` / `npm install` in this directory. With the dev dependencies it builds
// dist/. A production install (--omit=dev) has no TypeScript: it keeps the dist/ it was given (built beforehand)
// rather than failing on `tsc: not found`, and fails with a clear message only when there is no dist/ at all.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

let compiler = true;
try {
  createRequire(import.meta.url).resolve('typescript');
} catch {
  compiler = false;
}
if (!compiler) {
  if (existsSync(new URL('../dist/main.js', import.meta.url))) {
    console.error('buildcached: no TypeScript here (production install): keeping the dist/ that is already built');
    process.exit(0);
  }
  console.error('buildcached: no TypeScript here (production install) and no dist/ to run: build with the dev dependencies first (npm ci), see README "Installing"');
  process.exit(1);
}
const build = spawnSync('npm', ['run', 'build'], { stdio: 'inherit' });
process.exit(build.status ?? 1);
