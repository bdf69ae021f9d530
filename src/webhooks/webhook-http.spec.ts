import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNonPublicAddress, postWebhook, webhookUrlProblem } from './webhook-http.js';

describe('webhook target rules', () => {
  it('classifies non-public addresses', () => {
    for (const ip of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fd00::1', 'fe80::1', '::ffff:127.0.0.1', '224.0.0.1']) {
      expect(isNonPublicAddress(ip), ip).toBe(true);
    }
    for (const ip of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) {
      expect(isNonPublicAddress(ip), ip).toBe(false);
    }
  });

  it('accepts http(s) URLs only, without credentials, and public hosts unless private targets are allowed', () => {
    expect(webhookUrlProblem('https://shop.example/hooks', false)).toBeUndefined();
    expect(webhookUrlProblem('http://127.0.0.1:8080/x', true)).toBeUndefined();
    expect(webhookUrlProblem('http://127.0.0.1:8080/x', false)).toMatch(/public/);
    expect(webhookUrlProblem('http://[::1]/x', false)).toMatch(/public/);
    expect(webhookUrlProblem('http://localhost/x', false)).toMatch(/public/);
    expect(webhookUrlProblem('ftp://shop.example/x', true)).toMatch(/http/);
    expect(webhookUrlProblem('javascript:alert(1)', true)).toMatch(/http/);
    expect(webhookUrlProblem('https://user:pw@shop.example/x', true)).toMatch(/credentials/);
    expect(webhookUrlProblem('not a url', true)).toMatch(/absolute/);
  });
});

describe('postWebhook', () => {
  let server: http.Server;
  let base: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/redirect') {
        res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere' }).end();
      } else if (req.url === '/slow') {
        setTimeout(() => res.writeHead(200).end(), 1_000);
      } else if (req.url === '/fail') {
        res.writeHead(503).end('down for maintenance');
      } else {
        res.writeHead(204).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const opts = { timeoutMs: 300, allowPrivateTargets: true };

  it('treats 2xx as delivered and anything else, redirects included, as a failure', async () => {
    const ok = await postWebhook(`${base}/ok`, '{}', {}, opts);
    expect(ok.status).toBe(204);
    expect(ok.error).toBeUndefined();
    expect(await postWebhook(`${base}/fail`, '{}', {}, opts)).toMatchObject({ status: 503, error: 'HTTP 503: down for maintenance' });
    const redirect = await postWebhook(`${base}/redirect`, '{}', {}, opts);
    expect(redirect.status).toBe(302);
    expect(redirect.error).toMatch(/not followed/);
  });

  it('times out, refuses non-public targets when not allowed, and refuses other schemes', async () => {
    expect((await postWebhook(`${base}/slow`, '{}', {}, opts)).error).toMatch(/no answer within 300 ms/);
    expect((await postWebhook(`${base}/ok`, '{}', {}, { ...opts, allowPrivateTargets: false })).error).toMatch(/not a public address/);
    expect((await postWebhook('http://localhost:1/x', '{}', {}, { ...opts, allowPrivateTargets: false })).error).toMatch(/ENOTPUBLIC/);
    expect((await postWebhook('file:///etc/passwd', '{}', {}, opts)).error).toMatch(/refusing/);
  });
});
