import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Access to /metrics. Prometheus scrapers usually carry no API key, so /metrics is public
 * unless METRICS_TOKEN is set; then it requires `Authorization: Bearer <METRICS_TOKEN>`
 * (Prometheus: `authorization: { credentials: ... }` in the scrape config). The comparison
 * is over SHA-256 digests, so it takes the same time whatever the presented value.
 */
export function metricsAccessAllowed(token: string | undefined, authorization: string | string[] | undefined): boolean {
  if (token === undefined) return true;
  if (typeof authorization !== 'string') return false;
  const match = /^Bearer ([\x21-\x7e]{1,512})$/i.exec(authorization);
  if (!match) return false;
  return timingSafeEqual(sha256(match[1]), sha256(token));
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** The problem+json body and headers of a refused scrape (401). */
export const METRICS_UNAUTHORIZED = {
  status: 401,
  headers: {
    'Content-Type': 'application/problem+json',
    'WWW-Authenticate': 'Bearer realm="metrics"',
    'Cache-Control': 'no-store',
  },
  body: JSON.stringify({
    type: 'about:blank',
    title: 'Unauthorized',
    status: 401,
    code: 'unauthorized',
    detail: 'Send the metrics token as "Authorization: Bearer <METRICS_TOKEN>".',
    instance: '/metrics',
  }),
} as const;
