import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Problem } from './problem.js';
import { requestPath } from './request-path.js';

/** A connect-style middleware, as Nest runs them on Fastify (@fastify/middie): node's request and response. */
export type RawMiddleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;

/** The URL as the client sent it (middie strips the mount path from `req.url`). */
export function originalUrl(req: IncomingMessage): string {
  return (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
}

/** Answers with a problem+json body on node's response (middleware has no framework reply). */
export function sendProblem(req: IncomingMessage, res: ServerResponse, p: Problem): void {
  const body = JSON.stringify(p.body(requestPath(originalUrl(req))));
  res.writeHead(p.getStatus(), {
    'Content-Type': 'application/problem+json',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
