import send from '@fastify/send';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import { Problem } from '../common/problem.js';
import { requestPath } from '../common/request-path.js';
import { originalUrl, sendProblem, type RawMiddleware } from '../common/raw-http.js';
import { CONSOLE_HEADERS, consoleBuilt } from './console-assets.js';

/** The mount point of the console. */
export const CONSOLE_ROUTE = '/console';

/** Vite's hashed output: safe to cache for a year, a new build has new names. */
const ASSET_RE = /^\/assets\/[\w-]{1,150}(\.[\w-]{1,20}){1,3}$/;

/**
 * Sends one file of the build (with ETag, Last-Modified and conditional GETs, by
 * @fastify/send, the file server of @fastify/static); anything it cannot send is 404.
 */
async function sendFile(req: IncomingMessage, res: ServerResponse, dir: string, file: string, cacheControl: string): Promise<void> {
  const result = await send(req, file, { root: dir, dotfiles: 'deny', cacheControl: false, index: false });
  if (result.type !== 'file') {
    result.stream.destroy();
    return sendProblem(req, res, new Problem('not_found', 'No such console file.'));
  }
  res.writeHead(result.statusCode, { ...result.headers, 'Cache-Control': cacheControl });
  pipeline(result.stream, res, () => undefined); // a client gone mid-file needs nothing more
}

/**
 * Serves the built console (a static SPA) under /console. It is public: the page holds no
 * data and no secret; everything it shows comes from /v1 with the user's own key, where the
 * ApiKeyGuard authorises each call. Routing inside the app is by URL fragment
 * (/console/#/refunds/<id>), so the server only ever serves index.html and /assets/*; any
 * other path is 404. Every answer carries the strict CSP of console-assets.ts.
 */
export function consoleStaticMiddleware(dir: string): RawMiddleware {
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const full = requestPath(originalUrl(req));
    if (!full.toLowerCase().startsWith(CONSOLE_ROUTE)) return next();
    const sub = full.slice(CONSOLE_ROUTE.length);
    for (const [name, value] of Object.entries(CONSOLE_HEADERS)) res.setHeader(name, value);
    if (!consoleBuilt(dir)) {
      return sendProblem(req, res, new Problem('service_unavailable', 'The console is not built: run `npm run build`.'));
    }
    if (sub === '') {
      res.writeHead(301, { Location: `${CONSOLE_ROUTE}/` });
      res.end();
      return;
    }
    // index.html is always revalidated, so a deploy is picked up at the next load.
    const file = sub === '/' || sub === '/index.html' ? 'index.html' : ASSET_RE.test(sub) ? sub.slice(1) : undefined;
    if (!file) return sendProblem(req, res, new Problem('not_found', 'No such console page; the console lives at /console/.'));
    sendFile(req, res, dir, file, file === 'index.html' ? 'no-cache' : 'public, max-age=31536000, immutable').catch(next);
  };
}
