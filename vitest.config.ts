import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // e2e suites start real daemons and clients; two cores do not gain from more parallel files.
    fileParallelism: true,
    maxWorkers: 2,
    // The JSON report lets .ci/run print a one-line summary that CI reads.
    reporters: ['default', ['json', { outputFile: 'test-results/vitest.json' }]],
  },
});
