import { defineConfig } from 'vitest/config';

// The chaos suite (`npm run test:chaos`): real Postgres clusters, redis-servers and service
// processes (`node dist/src/main.js`, so build first) started and broken by the tests
// themselves. Kept out of `npm test`. One scenario at a time: each runs several processes
// and two cores are all CI has.
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.chaos.spec.ts'],
    environment: 'node',
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 240_000,
    teardownTimeout: 120_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
