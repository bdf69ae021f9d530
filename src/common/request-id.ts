import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * The id of a request: the caller's `X-Request-Id` when it is a plain token (1–128 of
 * `A–Z a–z 0–9 _ . -`, so it cannot forge log fields), else a new UUID. Echoed as the
 * response's `X-Request-Id` and logged on every line of the request.
 */
export function requestIdFor(headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id'];
  return typeof given === 'string' && /^[\w.-]{1,128}$/.test(given) ? given : randomUUID();
}
