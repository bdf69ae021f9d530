import { setMaxListeners } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Logger } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../database/database.js';
import { DueWebhook, MAX_SOCKETS_PER_RECEIVER, WebhookDeliveries, postWebhook, webhookAgents } from './sandbox-webhooks.js';

// The lanes' bookkeeping, with a stand-in for the database (the deliveries against a real one
// are in test/sandbox-binance-pay.e2e.spec.ts).

describe('WebhookDeliveries: lanes', () => {
  it('fails the round with a lane\'s error only after every lane has finished, never leaving it unhandled', async () => {
    const batch = 2;
    let claims = 0;
    let recorded = 0;
    const db = {
      async query(sql: string): Promise<unknown[]> {
        if (sql.includes('FOR UPDATE SKIP LOCKED')) {
          claims++;
          // The first claim is a full batch, which opens a second lane; its claim fails, as
          // on a lost connection, while the first lane is still sending.
          if (claims === 1) return [1, 2].map((id) => ({ id: String(id), url: 'http://127.0.0.1:9/', attempts: 0 }));
          throw new Error('connection lost');
        }
        if (sql.includes('SET attempts = $2')) recorded++;
        return [];
      },
    } as unknown as Database;
    const deliveries = new WebhookDeliveries<DueWebhook>(db, new Logger('test'), {
      table: 'hooks',
      columns: [],
      batch,
      timeoutMs: 1_000,
      leaseMs: 30_000,
      // Each send takes a while and fails, so the first lane records two failures at the end.
      request: async () => {
        await new Promise((resolve) => setTimeout(resolve, 50));
        throw new Error('not sent');
      },
      acknowledged: () => true,
      retryDelay: () => 1_000,
      maxAttempts: 2,
    });
    await expect(deliveries.deliverDue(new AbortController().signal)).rejects.toThrow('connection lost');
    expect(claims).toBe(2);
    // The first lane had finished (both failures recorded) before the round gave up.
    expect(recorded).toBe(batch);
  });
});

describe('postWebhook: one delivery over node:http', () => {
  // A real receiver on 127.0.0.1; each path answers one way.
  const seen: Array<{ method?: string; headers: http.IncomingHttpHeaders; body: string }> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (req.url === '/ok') res.writeHead(200, { 'content-type': 'application/json' }).end('{"returnCode":"SUCCESS"}');
      else if (req.url === '/redirect') res.writeHead(302, { location: '/ok' }).end();
      else if (req.url === '/big') res.writeHead(200).end('x'.repeat(200 * 1024));
      else if (req.url === '/cut') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
        setTimeout(() => res.socket?.destroy(), 20);
      } else if (req.url === '/slow') setTimeout(() => res.writeHead(200).end('late'), 2_000);
      else res.writeHead(404).end('no such hook');
    });
  });
  let base = '';
  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const never = new AbortController().signal;
  // The tests' own connections, as each emulator has its own.
  const pool = webhookAgents();

  it('sends the body as JSON with the given headers and answers the status and text', async () => {
    const body = JSON.stringify({ bizStatus: 'REFUND_SUCCESS', note: 'é' });
    const answer = await postWebhook(`${base}/ok`, body, { 'BinancePay-Signature': 'sig' }, 1_000, never, pool);
    expect(answer).toEqual({ status: 200, text: '{"returnCode":"SUCCESS"}' });
    const got = seen.at(-1)!;
    expect(got.method).toBe('POST');
    expect(got.body).toBe(body);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['content-length']).toBe(String(Buffer.byteLength(body)));
    expect(got.headers['binancepay-signature']).toBe('sig');
  });

  it('does not follow redirects and answers non-2xx statuses as they are', async () => {
    const before = seen.length;
    expect((await postWebhook(`${base}/redirect`, '{}', {}, 1_000, never, pool)).status).toBe(302);
    // Only the redirecting request reached the receiver.
    expect(seen.length).toBe(before + 1);
    expect(await postWebhook(`${base}/missing`, '{}', {}, 1_000, never, pool)).toEqual({ status: 404, text: 'no such hook' });
  });

  it('keeps only the first 2 kB of a large answer', async () => {
    const answer = await postWebhook(`${base}/big`, '{}', {}, 2_000, never, pool);
    expect(answer.status).toBe(200);
    expect(answer.text).toBe('x'.repeat(2 * 1024));
  });

  it('fails when the receiver is not there, cuts the answer, or does not answer in time', async () => {
    // A port that was just listened on and closed: nothing answers there.
    const gone = http.createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const port = (gone.address() as AddressInfo).port;
    await new Promise((resolve) => gone.close(resolve));
    await expect(postWebhook(`http://127.0.0.1:${port}/`, '{}', {}, 1_000, never, pool)).rejects.toThrow(/^ECONNREFUSED: connect ECONNREFUSED/);
    const cutAt = Date.now();
    await expect(postWebhook(`${base}/cut`, '{}', {}, 1_000, never, pool)).rejects.toThrow(/ECONNRESET|aborted|closed before the answer ended/);
    // Failed by the cut itself, not by the timer.
    expect(Date.now() - cutAt).toBeLessThan(900);
    const started = Date.now();
    await expect(postWebhook(`${base}/slow`, '{}', {}, 200, never, pool)).rejects.toThrow('no answer within 200 ms');
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it('stops at once when the shutdown signal fires', async () => {
    const shutdown = new AbortController();
    const sent = postWebhook(`${base}/slow`, '{}', {}, 5_000, shutdown.signal, pool);
    setTimeout(() => shutdown.abort(), 50);
    await expect(sent).rejects.toThrow(/abort/i);
    const before = seen.length;
    await expect(postWebhook(`${base}/ok`, '{}', {}, 1_000, shutdown.signal, pool)).rejects.toThrow('aborted: shutting down');
    expect(seen.length).toBe(before);
  });

  it('sends a whole batch on one shutdown signal without a listener-leak warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const rows = Array.from({ length: 30 }, (_, i) => ({ id: String(i + 1), url: `${base}/ok`, attempts: 0 }));
      let delivered: string[] = [];
      const db = {
        async query(sql: string, params?: unknown[]): Promise<unknown[]> {
          if (sql.includes('FOR UPDATE SKIP LOCKED')) return rows.splice(0);
          if (sql.includes("SET status = 'DELIVERED'")) delivered = (params?.[0] as string[]) ?? [];
          return [];
        },
      } as unknown as Database;
      const deliveries = new WebhookDeliveries<DueWebhook>(db, new Logger('test'), {
        table: 'hooks',
        columns: [],
        batch: 30,
        timeoutMs: 2_000,
        leaseMs: 30_000,
        request: async (row) => ({ body: JSON.stringify({ id: row.id }), headers: {} }),
        acknowledged: (status, text) => status === 200 && text.includes('SUCCESS'),
        retryDelay: () => 1_000,
        maxAttempts: 2,
      });
      const before = seen.length;
      await deliveries.deliverDue(new AbortController().signal);
      expect(delivered).toHaveLength(30);
      expect(seen.length).toBe(before + 30);
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('opens at most MAX_SOCKETS_PER_RECEIVER connections to a receiver, and a wait for one does not count against the timeout', async () => {
    // A receiver of its own that answers after 100 ms and counts its open connections.
    let open = 0;
    let peak = 0;
    const receiver = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => setTimeout(() => res.writeHead(200).end('{"returnCode":"SUCCESS"}'), 300));
    });
    receiver.on('connection', (socket) => {
      peak = Math.max(peak, ++open);
      socket.on('close', () => open--);
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
      const deliveries = 3 * MAX_SOCKETS_PER_RECEIVER;
      const shutdown = new AbortController();
      setMaxListeners(deliveries + 10, shutdown.signal);
      // All at once, as four lanes of a batch each would send them: the rest wait for a free
      // connection instead of opening a burst of new ones (docs/performance.md, finding 57).
      // Each answer takes 300 ms and the timeout is 500 ms: the last third waits ~600 ms for
      // a connection, which does not count against its timeout.
      const agents = webhookAgents();
      const answers = await Promise.all(
        Array.from({ length: deliveries }, () => postWebhook(url, '{}', {}, 500, shutdown.signal, agents)),
      );
      expect(answers.every((a) => a.status === 200)).toBe(true);
      expect(peak).toBe(MAX_SOCKETS_PER_RECEIVER);
      agents.http.destroy();
    } finally {
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  it('rejects a URL it cannot send to', async () => {
    await expect(postWebhook('ftp://127.0.0.1/x', '{}', {}, 1_000, never, pool)).rejects.toThrow('unsupported URL scheme ftp:');
    await expect(postWebhook('not a url', '{}', {}, 1_000, never, pool)).rejects.toThrow();
  });
});
