#!/usr/bin/env node
// Writes src/config/default-config.ts from config/default.yaml, the one place the defaults are edited: the build
// then carries them inside dist/, so dist/ + node_modules/ + package.json run without config/ on disk. Run by
// `npm run build`; the output is committed so that a plain `tsc` works on a fresh checkout.
import { readFileSync, writeFileSync } from 'node:fs';

const yaml = readFileSync(new URL('../config/default.yaml', import.meta.url), 'utf8');
const target = new URL('../src/config/default-config.ts', import.meta.url);
const text =
  '// Generated from config/default.yaml by scripts/embed-default-config.mjs (npm run build): edit that file instead.\n' +
  `export const DEFAULT_CONFIG_YAML = ${JSON.stringify(yaml)};\n`;
let current = '';
try {
  current = readFileSync(target, 'utf8');
} catch {
  // first build
}
// Unchanged output is not rewritten, so tsc and editors see no spurious change.
if (current !== text) writeFileSync(target, text);
