import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

// The ops console: vanilla TypeScript, no runtime dependency. Built by `npm run build` into
// dist/console, which the service serves at /console (src/console). Hashed asset names,
// no inline script or style (the service sends a CSP without 'unsafe-inline').
export default defineConfig({
  root: here,
  base: '/console/',
  publicDir: false,
  build: {
    outDir: fileURLToPath(new URL('../dist/console', import.meta.url)),
    emptyOutDir: true,
    // .vite/manifest.json also tells the service a build from the sources (src/console).
    manifest: true,
    target: 'es2022',
    sourcemap: false,
    // CSS is one small file; never inline assets as data: URLs (CSP stays simple).
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    // `npx vite --config console/vite.config.ts` against a local service on :3000.
    proxy: { '/v1': 'http://127.0.0.1:3000' },
  },
});
