// Preloaded into a daemon by the scale benchmark (node --expose-gc --import): on SIGUSR2 it collects garbage
// fully and writes process.memoryUsage() as JSON to $BUILDCACHED_MEMORY_PROBE, so the benchmark can tell the
// memory the index retains from garbage not yet collected. Never part of a real daemon.
import { renameSync, writeFileSync } from 'node:fs';

const out = process.env.BUILDCACHED_MEMORY_PROBE;
if (out && typeof globalThis.gc === 'function') {
  process.on('SIGUSR2', () => {
    globalThis.gc();
    writeFileSync(`${out}.tmp`, JSON.stringify(process.memoryUsage()));
    // Renamed into place so the benchmark never reads half a file.
    renameSync(`${out}.tmp`, out);
  });
}
