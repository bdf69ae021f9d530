import swc from 'unplugin-swc';
import { defineConfig } from 'vitest/config';

// SWC (not esbuild) transpiles the tests because Nest's dependency injection and
// TypeORM need emitDecoratorMetadata, which esbuild does not implement.
export default defineConfig({
  plugins: [swc.vite({ module: { type: 'es6' } })],
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['src/**/*.spec.ts'], environment: 'node' },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/**/*.e2e.spec.ts'],
          environment: 'node',
          // Each e2e file boots the whole service on its own database; two cores do not
          // gain from running several at once, and serial runs keep timings readable.
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
