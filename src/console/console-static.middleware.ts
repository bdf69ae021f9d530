import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { join } from 'node:path';
import { Problem } from '../common/problem.js';
import { CONSOLE_HEADERS, consoleBuilt } from './console-assets.js';

/** The mount point of the console. */
export const CONSOLE_ROUTE = '/console';

/** Vite's hashed output: safe to cache for a year, a new build has new names. */
const ASSET_RE = /^\/assets\/[\w-]{1,150}(\.[\w-]{1,20}){1,3}$/;

function problem(req: Request, res: Response, p: Problem): void {
  res
    .status(p.getStatus())
    .set({ 'Content-Type': 'application/problem+json', 'Cache-Control': 'no-store' })
    .send(JSON.stringify(p.body(req.originalUrl.split('?')[0])));
}

/**
 * Serves the built console (a static SPA) under /console. It is public: the page holds no
 * data and no secret; everything it shows comes from /v1 with the user's own key, where the
 * ApiKeyGuard authorises each call. Routing inside the app is by URL fragment
 * (/console/#/refunds/<id>), so the server only ever serves index.html and /assets/*; any
 * other path is 404. Every answer carries the strict CSP of console-assets.ts.
 */
export function consoleStaticMiddleware(dir: string): RequestHandler {
  const index = join(dir, 'index.html');
  return (req: Request, res: Response, next: NextFunction) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    // req.path is relative to the mount path when mounted with app.use, absolute otherwise.
    const full = req.originalUrl.split('?')[0];
    if (!full.toLowerCase().startsWith(CONSOLE_ROUTE)) return next();
    const sub = full.slice(CONSOLE_ROUTE.length);
    res.set(CONSOLE_HEADERS);
    if (!consoleBuilt(dir)) {
      return problem(req, res, new Problem('service_unavailable', 'The console is not built: run `npm run build`.'));
    }
    if (sub === '') return res.redirect(301, `${CONSOLE_ROUTE}/`);
    if (sub === '/' || sub === '/index.html') {
      // Always revalidated, so a deploy is picked up at the next load.
      res.set('Cache-Control', 'no-cache');
      return res.sendFile(index, (err) => err && next(err));
    }
    if (ASSET_RE.test(sub)) {
      res.set('Cache-Control', 'public, max-age=31536000, immutable');
      return res.sendFile(sub.slice(1), { root: dir, dotfiles: 'deny' }, (err) => {
        if (err && !res.headersSent) problem(req, res, new Problem('not_found', 'No such console file.'));
      });
    }
    return problem(req, res, new Problem('not_found', 'No such console page; the console lives at /console/.'));
  };
}
