import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { Writable } from 'node:stream';
import { pinoHttp } from 'pino-http';
import { describe, expect, it } from 'vitest';
import { httpLoggerOptions, redactUrl } from './app.module.js';

describe('redactUrl (request URLs in logs)', () => {
  it('redacts the values of secret-looking query parameters and keeps the rest', () => {
    expect(redactUrl('/v1/refunds?api_key=rk_live_abc&limit=5')).toBe('/v1/refunds?api_key=[redacted]&limit=5');
    expect(redactUrl('/v1/refunds?access_token=x&Token=y&status=failed')).toBe('/v1/refunds?access_token=[redacted]&Token=[redacted]&status=failed');
    expect(redactUrl('/v1/refunds?api%5Fkey=x')).toBe('/v1/refunds?api%5Fkey=[redacted]');
    expect(redactUrl('/v1/refunds?password')).toBe('/v1/refunds?password');
    expect(redactUrl('/v1/refunds?%E0%A4%A=x')).toBe('/v1/refunds?%E0%A4%A=x');
    expect(redactUrl('/v1/refunds')).toBe('/v1/refunds');
  });
});

describe('httpLoggerOptions (the access log, through pino-http)', () => {
  /**
   * Serves one request through pino-http with the service's options; returns the lines
   * logged, raw (a duplicate key would vanish in JSON.parse) and parsed.
   */
  async function logOf(path: string, headers: Record<string, string>, role: 'api' | 'worker' | 'all' = 'api') {
    const raw: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        raw.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const middleware = pinoHttp(httpLoggerOptions({ logLevel: 'info', role }), sink);
    // A line outside any request (startup, sweepers, the worker's jobs).
    middleware.logger.info('process line');
    let finished!: Promise<void>;
    const server = http.createServer((req, res) => {
      middleware(req, res);
      // Registered after pino-http's own listener, so it runs after the access line is written.
      finished = new Promise((resolve) => res.once('finish', () => resolve()));
      req.log.info({ step: 'inside' }, 'handler line');
      // Response headers are logged: a cookie must reach the log redacted.
      res.setHeader('Set-Cookie', 'session=cookie_secret');
      res.statusCode = 202;
      res.end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
      await res.text();
      await finished;
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    return { raw, lines: raw.map((l) => JSON.parse(l) as Record<string, unknown>) };
  }

  it('writes one access line per request with the role, pid, host, request id and a redacted URL, and no credentials', async () => {
    const { raw, lines } = await logOf('/v1/refunds?api_key=rk_live_secret&limit=5', {
      authorization: 'Bearer rk_live_secret_header',
      'x-request-id': 'req-123',
    });
    const access = lines.find((l) => l.msg === 'request completed');
    expect(access).toMatchObject({
      role: 'api',
      pid: process.pid,
      hostname: hostname(),
      req: { id: 'req-123', method: 'GET', url: '/v1/refunds?api_key=[redacted]&limit=5' },
      res: { statusCode: 202, headers: { 'set-cookie': '[redacted]' } },
    });
    // Lines written inside the request carry the role and the request too.
    expect(lines.find((l) => l.msg === 'handler line')).toMatchObject({ role: 'api', req: { id: 'req-123' }, step: 'inside' });
    const all = raw.join('\n');
    expect(all).not.toContain('rk_live_secret'); // URL redacted; request headers are not logged
    expect(all).not.toContain('cookie_secret'); // REDACTED_PATHS
    // The role once per line: a base binding, not also a per-request child (checked on the
    // raw lines, where a second "role" key would still show).
    for (const line of raw) expect(line.match(/"role"/g)).toHaveLength(1);
  });

  it('names the process role on lines outside requests, and leaves health probes out of the access log', async () => {
    const { lines } = await logOf('/health/live', {}, 'worker');
    expect(lines.find((l) => l.msg === 'request completed')).toBeUndefined();
    expect(lines.find((l) => l.msg === 'handler line')).toMatchObject({ role: 'worker' });
    // What a worker logs is mostly not about an HTTP request.
    expect(lines.find((l) => l.msg === 'process line')).toMatchObject({ role: 'worker', pid: process.pid });
  });
});
