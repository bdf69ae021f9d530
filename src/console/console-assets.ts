import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Written by Vite (build.manifest) into every console build: tells a build from the sources. */
const BUILD_MARKER = '.vite/manifest.json';

/**
 * Where the built console is: `dist/console` beside the compiled code (dist/src/console/ →
 * dist/console), or the repository's `dist/console` when the service runs from its sources
 * (the tests). Built by `npm run build` (vite build --config console/vite.config.ts).
 */
export function consoleDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const compiled = resolve(here, '../../console');
  if (existsSync(join(compiled, BUILD_MARKER))) return compiled;
  return resolve(here, '../../dist/console');
}

export function consoleBuilt(dir: string): boolean {
  return existsSync(join(dir, BUILD_MARKER)) && existsSync(join(dir, 'index.html'));
}

/**
 * The console's Content-Security-Policy: its own scripts, styles and API only. No inline
 * script or style, no eval, no third-party origin, no framing; downloads (the CSV) are
 * blob: URLs made by the page, which navigation to a download does not need a source for.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const CONSOLE_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONSOLE_CSP,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};
