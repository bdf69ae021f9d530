import 'reflect-metadata';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { INestApplication, Logger, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { configureBodiesAndErrors, createHttpAdapter } from '../src/app.js';
import { LosslessNumber, isLosslessNumber, parse, stringify } from 'lossless-json';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { ConfigModule } from '../src/config/config.module.js';
import { DatabaseModule } from '../src/database/database.module.js';
import {
  binanceCertSerial,
  binanceHeaders,
  signBinanceRequest,
  verifyBinanceWebhook,
} from '../src/providers/binance-pay/binance-pay.signing.js';
import { SandboxCredentials } from '../src/sandbox/sandbox-credentials.js';
import { SandboxModule } from '../src/sandbox/sandbox.module.js';
import { SandboxStore } from '../src/sandbox/sandbox-store.js';
import { DueWebhook, MAX_LANES, WebhookDeliveries } from '../src/sandbox/sandbox-webhooks.js';
import { Database } from '../src/database/database.js';
import { createTestDatabase, dropTestDatabase } from './support/database.js';

// ---------------------------------------------------------------------------------------
// Harness: the emulator in a bare Nest app (no product code), two "processes" on one database.

interface Booted {
  app: INestApplication;
  base: string;
}

async function boot(databaseUrl: string): Promise<Booted> {
  const cfg = loadConfig({
    ...process.env,
    DATABASE_URL: databaseUrl,
    SANDBOX: 'true',
    MIGRATIONS_RUN: 'false',
    PORT: '0',
    DB_POOL_SIZE: '10',
  });
  @Module({ imports: [ConfigModule.forRoot(cfg), DatabaseModule, SandboxModule.register({ serveHttp: true })] })
  class EmulatorTestModule {}
  const app = await NestFactory.create<NestFastifyApplication>(EmulatorTestModule, createHttpAdapter(), {
    rawBody: true,
    bodyParser: false,
    logger: process.env.TEST_LOGS ? ['error', 'warn'] : false,
  });
  // As the service does (src/app.ts).
  configureBodiesAndErrors(app);
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  return { app, base: `http://127.0.0.1:${port}` };
}

interface Answer {
  status: number;
  text: string;
  contentType: string | undefined;
  headers: http.IncomingHttpHeaders;
}

/** Plain node:http, one connection per call, so a dropped connection surfaces as "socket hang up". */
function request(base: string, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}${path}`,
      {
        method,
        agent: false,
        headers: body === undefined ? headers : { 'content-length': String(Buffer.byteLength(body)), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            text: Buffer.concat(chunks).toString('utf8'),
            contentType: res.headers['content-type'],
            headers: res.headers,
          }),
        );
      },
    );
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('client timeout')));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let dbUrl: string;
let a: Booted;
let b: Booted;
let creds: { apiKey: string; secretKey: string };

/** JSON control endpoints of the sandbox (not the Binance protocol). */
async function control(method: string, path: string, body?: unknown, via: Booted = a) {
  const res = await request(
    via.base,
    method,
    path,
    body === undefined ? undefined : JSON.stringify(body),
    body === undefined ? {} : { 'content-type': 'application/json' },
  );
  return { status: res.status, body: res.text ? JSON.parse(res.text) : undefined };
}

interface BinanceAnswer extends Answer {
  /** Parsed with lossless-json: numbers are LosslessNumber. */
  lossless: any;
  /** Parsed with JSON.parse, for plain assertions. */
  json: any;
}

/** A signed merchant API call; `headers` overrides (undefined removes) the signed headers. */
async function binance(
  endpoint: string,
  body: string,
  opts: { headers?: Record<string, string | undefined>; via?: Booted } = {},
): Promise<BinanceAnswer> {
  const headers: Record<string, string | undefined> = { ...binanceHeaders(creds.apiKey, creds.secretKey, body), ...opts.headers };
  const clean = Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== undefined)) as Record<string, string>;
  const res = await request((opts.via ?? a).base, 'POST', `/sandbox/binance-pay/binancepay/openapi/${endpoint}`, body, clean);
  let lossless: unknown;
  let json: unknown;
  try {
    lossless = parse(res.text);
    json = JSON.parse(res.text);
  } catch {
    /* asserted by the caller */
  }
  return { ...res, lossless, json };
}

/** Refund body with refundAmount as a JSON number, as the docs and SDK send it. */
function refundBody(refundRequestId: string, prepayId: string, amount: string, extra: Record<string, unknown> = {}): string {
  return stringify({ refundRequestId, prepayId, refundAmount: new LosslessNumber(amount), ...extra })!;
}

const refund = (id: string, prepayId: string, amount: string, extra: Record<string, unknown> = {}) =>
  binance('order/refund', refundBody(id, prepayId, amount, extra));
const queryRefund = (id: string) => binance('order/refund/query', JSON.stringify({ refundRequestId: id }));

async function payment(amount: string, status?: string): Promise<string> {
  const res = await control('POST', '/sandbox/payments', { provider: 'binance_pay', amount, currency: 'USDT', ...(status ? { status } : {}) });
  expect(res.status).toBe(201);
  return res.body.paymentId as string;
}

async function emulatorRefunds(prepayId: string): Promise<any[]> {
  const res = await control('GET', `/sandbox/binance-pay/refunds?prepayId=${prepayId}`);
  expect(res.status).toBe(200);
  return res.body.data;
}

let seq = 0;
const rid = (label: string) => `${label}-${Date.now()}-${seq++}`;

// --- webhook receiver -------------------------------------------------------------------

interface Hook {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}
const hooks: Hook[] = [];
/** Per path: how many deliveries to answer 500 before acknowledging. */
const failFirst = new Map<string, number>();
let receiver: http.Server;
let receiverUrl: string;

beforeAll(async () => {
  dbUrl = await createTestDatabase('sandbox_binance');
  // Two processes starting at once exercise the schema creation lock.
  [a, b] = await Promise.all([boot(dbUrl), boot(dbUrl)]);
  creds = await a.app.get(SandboxCredentials).binancePay();

  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      hooks.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const left = failFirst.get(path) ?? 0;
      if (left > 0) {
        failFirst.set(path, left - 1);
        res.writeHead(500, { 'content-type': 'text/plain' }).end('try later');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"returnCode":"SUCCESS","returnMessage":null}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await Promise.all([a?.app.close(), b?.app.close()]);
  await new Promise((resolve) => receiver?.close(resolve));
  if (dbUrl) await dropTestDatabase(dbUrl);
});

beforeEach(async () => {
  expect((await control('DELETE', '/sandbox/binance-pay/faults')).status).toBe(200);
  // Fast settlement keeps the file short; the default (1 s) is asserted in the faults test.
  expect((await control('PUT', '/sandbox/binance-pay/faults', { settleAfterMs: 100 })).status).toBe(200);
});

// ---------------------------------------------------------------------------------------

describe('Binance Pay emulator: credentials and state', () => {
  it('shares one generated credential set per database across processes', async () => {
    expect(creds.apiKey).toMatch(/^[0-9a-f]{64}$/);
    expect(await b.app.get(SandboxCredentials).binancePay()).toEqual(creds);
  });
});

describe('Binance Pay emulator: seeded payments', () => {
  it('creates and lists payments, and validates the input', async () => {
    const created = await control('POST', '/sandbox/payments', { provider: 'binance_pay', amount: '100.00', currency: 'USDT' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ provider: 'binance_pay', amount: '100.00000000', currency: 'USDT', status: 'PAID' });
    expect(created.body.paymentId).toMatch(/^[1-9]\d{18}$/);
    const list = await control('GET', '/sandbox/payments', undefined, b);
    expect(list.body.data.map((p: { paymentId: string }) => p.paymentId)).toContain(created.body.paymentId);

    const bad = async (body: unknown, error?: string) => {
      const res = await control('POST', '/sandbox/payments', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      if (error) expect(res.body).toEqual({ error });
    };
    await bad({ provider: 'paypal', amount: '1', currency: 'USDT' }, 'unsupported provider');
    await bad({ provider: 'binance_pay', amount: '1.123456789', currency: 'USDT' });
    await bad({ provider: 'binance_pay', amount: '0', currency: 'USDT' });
    await bad({ provider: 'binance_pay', amount: 5, currency: 'USDT' });
    await bad({ provider: 'binance_pay', amount: '1', currency: 'usdt' });
    await bad({ provider: 'binance_pay', amount: '1', currency: 'USDT', status: 'REFUNDED' });
    await bad({ provider: 'binance_pay', amount: '1', currency: 'USDT', extra: true });
    const malformed = await request(a.base, 'POST', '/sandbox/payments', '{"provider":', { 'content-type': 'application/json' });
    expect(malformed.status).toBe(400);
    expect(JSON.parse(malformed.text)).toEqual({ error: 'malformed JSON body' });
  });
});

describe('Binance Pay emulator: merchant API', () => {
  it('refunds a paid order and settles it to REFUND_SUCCESS', async () => {
    const prepayId = await payment('100.00');
    const id = rid('happy');
    const res = await refund(id, prepayId, '25.17', { refundReason: 'customer request' });
    expect(res.status).toBe(200);
    expect(res.contentType).toMatch(/^application\/json/);
    expect(res.json).toMatchObject({ status: 'SUCCESS', code: '000000' });
    const data = res.lossless.data;
    // refundId is a JSON number above 2^53 on the wire, like Binance's.
    expect(isLosslessNumber(data.refundId)).toBe(true);
    expect(data.refundId.value).toMatch(/^[1-9]\d{17}$/);
    expect(BigInt(data.refundId.value) > BigInt(Number.MAX_SAFE_INTEGER)).toBe(true);
    expect(res.json.data).toMatchObject({
      refundRequestId: id,
      prepayId,
      orderAmount: '100.00000000',
      refundedAmount: '25.17000000',
      refundAmount: '25.17000000',
      remainingAttempts: 9,
      duplicateRequest: 'N',
    });
    expect(res.json.data.payerOpenId).toMatch(/^[0-9a-f]{32}$/);

    const pending = await binance('v2/order/query', JSON.stringify({ prepayId }));
    expect(['REFUNDING', 'REFUNDED']).toContain(pending.json.data.status);

    const final = await waitFor('REFUND_SUCCESS', async () => {
      const q = await queryRefund(id);
      expect(q.json.status).toBe('SUCCESS');
      return q.json.data.refundStatus === 'REFUND_SUCCESS' && q;
    });
    expect(final.lossless.data.refundId.value).toBe(data.refundId.value);
    expect(final.json.data).toMatchObject({ refundAmount: '25.17000000', refundedAmount: '25.17000000', remainingAttempts: 9 });

    // Any process answers from the same state.
    const order = await binance('v2/order/query', JSON.stringify({ prepayId }), { via: b });
    expect(order.json.data).toMatchObject({ prepayId, currency: 'USDT', orderAmount: '100.00000000', status: 'REFUNDED' });
    const byTradeNo = await binance('v2/order/query', JSON.stringify({ merchantTradeNo: order.json.data.merchantTradeNo }));
    expect(byTradeNo.json.data.prepayId).toBe(prepayId);
    const inspected = await control('GET', `/sandbox/binance-pay/orders/${prepayId}`);
    expect(inspected.body).toMatchObject({ refundedAmount: '25.17000000', remainingAttempts: 9, status: 'REFUNDED' });
    const records = await emulatorRefunds(prepayId);
    expect(records).toEqual([
      expect.objectContaining({ refundRequestId: id, refundId: data.refundId.value, refundAmount: '25.17000000', status: 'REFUND_SUCCESS' }),
    ]);
  });

  it('answers unknown orders and refunds with 400202', async () => {
    const unknownRefund = await queryRefund(rid('nobody'));
    expect([unknownRefund.status, unknownRefund.json.status, unknownRefund.json.code]).toEqual([200, 'FAIL', '400202']);
    const unknownOrder = await binance('v2/order/query', JSON.stringify({ prepayId: '1234567890123456789' }));
    expect(unknownOrder.json.code).toBe('400202');
    const refundUnknown = await refund(rid('x'), '1234567890123456789', '1');
    expect([refundUnknown.status, refundUnknown.json.code]).toEqual([200, '400202']);
  });

  it('rejects refunds of unpaid orders with 400204', async () => {
    const prepayId = await payment('10', 'EXPIRED');
    const res = await refund(rid('expired'), prepayId, '1');
    expect([res.status, res.json.status, res.json.code]).toEqual([200, 'FAIL', '400204']);
    expect(await emulatorRefunds(prepayId)).toEqual([]);
  });

  it('serves the webhook certificate', async () => {
    const res = await binance('certificates', '{}');
    expect(res.json.status).toBe('SUCCESS');
    const [cert] = res.json.data;
    expect(cert.certPublic).toContain('BEGIN PUBLIC KEY');
    expect(cert.certSerial).toBe(binanceCertSerial(cert.certPublic));
  });
});

describe('Binance Pay emulator: authentication', () => {
  const body = () => refundBody(rid('auth'), '1234567890123456789', '1');

  async function expectFail(res: BinanceAnswer, httpStatus: number, code: string) {
    expect(res.status).toBe(httpStatus);
    expect(res.contentType).toMatch(/^application\/json/);
    expect(res.json).toMatchObject({ status: 'FAIL', code });
  }

  it('rejects bad, lowercase and missing signatures with 400002', async () => {
    const text = body();
    const ts = String(Date.now());
    const nonce = 'a'.repeat(32);
    const good = signBinanceRequest(creds.secretKey, ts, nonce, text);
    const headers = { 'BinancePay-Timestamp': ts, 'BinancePay-Nonce': nonce };
    await expectFail(
      await binance('order/refund', text, { headers: { ...headers, 'BinancePay-Signature': signBinanceRequest('wrong', ts, nonce, text) } }),
      400,
      '400002',
    );
    await expectFail(
      await binance('order/refund', text, { headers: { ...headers, 'BinancePay-Signature': good.toLowerCase() } }),
      400,
      '400002',
    );
    await expectFail(await binance('order/refund', text, { headers: { 'BinancePay-Signature': undefined } }), 400, '400002');
    // Signed over other bytes than those sent (a re-serialised body).
    await expectFail(
      await binance('order/refund', text.replace(':', ': '), { headers: { ...headers, 'BinancePay-Signature': good } }),
      400,
      '400002',
    );
  });

  it('rejects a short nonce with 400002', async () => {
    const text = body();
    const ts = String(Date.now());
    const nonce = 'abc123';
    const sig = signBinanceRequest(creds.secretKey, ts, nonce, text);
    await expectFail(
      await binance('order/refund', text, { headers: { 'BinancePay-Timestamp': ts, 'BinancePay-Nonce': nonce, 'BinancePay-Signature': sig } }),
      400,
      '400002',
    );
  });

  it('rejects a stale timestamp with 400003 unless the window is relaxed', async () => {
    const text = body();
    const stale = binanceHeaders(creds.apiKey, creds.secretKey, text, Date.now() - 5_000);
    await expectFail(await binance('order/refund', text, { headers: stale }), 400, '400003');
    await control('PUT', '/sandbox/binance-pay/faults', { timestampWindowMs: 60_000 });
    const relaxed = await binance('order/refund', text, { headers: binanceHeaders(creds.apiKey, creds.secretKey, text, Date.now() - 5_000) });
    expect(relaxed.json.code).toBe('400202'); // past auth: the order is unknown
  });

  it('rejects an unknown key with 400004', async () => {
    const text = body();
    await expectFail(await binance('order/refund', text, { headers: binanceHeaders('not-a-key', creds.secretKey, text) }), 400, '400004');
  });

  it('answers malformed JSON with 400001 in the Binance envelope, after authentication', async () => {
    const text = '{"refundRequestId":"x",';
    await expectFail(await binance('order/refund', text), 400, '400001');
    await expectFail(await binance('order/refund', text, { headers: { 'BinancePay-Signature': 'AB'.repeat(64) } }), 400, '400002');
    await expectFail(await binance('order/refund', '[1,2]'), 400, '400001');
  });

  it('answers a body over the service limit in the Binance envelope, and the control API as { error }', async () => {
    const big = JSON.stringify({ refundRequestId: 'x', pad: 'x'.repeat(70_000) });
    const res = await binance('order/refund', big);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({ status: 'FAIL', code: '400104' });
    const control = await request(a.base, 'POST', '/sandbox/payments', big, { 'content-type': 'application/json' });
    expect(control.status).toBe(413);
    expect(JSON.parse(control.text)).toEqual({ error: 'request body too large' });
  });

  it('validates fields with 400100/400101/400102', async () => {
    const prepayId = await payment('10');
    const check = async (text: string, code: string) => expectFail(await binance('order/refund', text), 400, code);
    await check(JSON.stringify({ prepayId, refundAmount: 1 }), '400100');
    await check(refundBody('x'.repeat(65), prepayId, '1'), '400101');
    await check(refundBody(rid('v'), '1'.repeat(20), '1'), '400101');
    await check(refundBody(rid('v'), prepayId, '0'), '400102');
    await check(refundBody(rid('v'), prepayId, '0.123456789'), '400102');
    await check(refundBody(rid('v'), prepayId, '1', { refundReason: 'r'.repeat(257) }), '400101');
    await check(refundBody(rid('v'), prepayId, '1', { webhookUrl: 'ftp://example.com/x' }), '400102');
    expect(await emulatorRefunds(prepayId)).toEqual([]);
  });
});

describe('Binance Pay emulator: duplicates and limits', () => {
  it('returns the stored refund for a repeated refundRequestId', async () => {
    const prepayId = await payment('50');
    const id = rid('dup');
    const first = await refund(id, prepayId, '10');
    const again = await refund(id, prepayId, '10.00');
    expect(again.json.data).toMatchObject({ duplicateRequest: 'Y', refundAmount: '10.00000000', remainingAttempts: 9 });
    expect(again.lossless.data.refundId.value).toBe(first.lossless.data.refundId.value);

    // Another amount: the stored refund by default, 400102 when the setting says reject.
    const otherAmount = await refund(id, prepayId, '12');
    expect(otherAmount.json.data).toMatchObject({ duplicateRequest: 'Y', refundAmount: '10.00000000' });
    await control('PUT', '/sandbox/binance-pay/faults', { duplicateMismatch: 'reject' });
    const rejected = await refund(id, prepayId, '12');
    expect([rejected.status, rejected.json.code]).toEqual([200, '400102']);
    expect((await refund(id, prepayId, '10')).json.data.duplicateRequest).toBe('Y');
    expect(await emulatorRefunds(prepayId)).toHaveLength(1);
  });

  it('creates one refund from 20 simultaneous identical requests', async () => {
    const prepayId = await payment('100');
    const id = rid('race');
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => binance('order/refund', refundBody(id, prepayId, '7'), { via: i % 2 ? b : a })),
    );
    expect(answers.map((r) => r.json.status)).toEqual(Array(20).fill('SUCCESS'));
    expect(answers.filter((r) => r.json.data.duplicateRequest === 'N')).toHaveLength(1);
    expect(new Set(answers.map((r) => r.lossless.data.refundId.value)).size).toBe(1);
    const records = await emulatorRefunds(prepayId);
    expect(records).toHaveLength(1);
    expect(records[0].refundAmount).toBe('7.00000000');
  });

  it('never refunds more than the order amount under concurrency (400303)', async () => {
    const prepayId = await payment('100');
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) => binance('order/refund', refundBody(rid('cap'), prepayId, '30'), { via: i % 2 ? b : a })),
    );
    expect(answers.filter((r) => r.json.status === 'SUCCESS')).toHaveLength(3);
    const refused = answers.filter((r) => r.json.status === 'FAIL');
    expect(refused.map((r) => [r.status, r.json.code])).toEqual(Array(5).fill([200, '400303']));
    const records = await emulatorRefunds(prepayId);
    expect(records.reduce((sum, r) => sum + Number(r.refundAmount), 0)).toBe(90);
    expect((await refund(rid('cap'), prepayId, '10.00000001')).json.code).toBe('400303');
    expect((await refund(rid('cap'), prepayId, '10')).json.data).toMatchObject({ refundedAmount: '100.00000000' });
  });

  it('answers a refund after refunds due to settle as if they had settled first', async () => {
    await control('PUT', '/sandbox/binance-pay/faults', { settleAfterMs: 0 });
    try {
      // Due and succeeding: accepted without settling them first, with the same answer.
      const prepayId = await payment('10');
      expect((await refund(rid('due'), prepayId, '6')).json.data).toMatchObject({ refundedAmount: '6.00000000', remainingAttempts: 9 });
      expect((await refund(rid('due'), prepayId, '4')).json.data).toMatchObject({ refundedAmount: '10.00000000', remainingAttempts: 8 });
      // Both due: settled first, the order is FULL_REFUNDED, and that is the refusal (not "amount too large").
      const over = await refund(rid('due'), prepayId, '1');
      expect([over.status, over.json.code]).toEqual([200, '400204']);
      // A due refund that will fail frees its amount before the next one is decided.
      const other = await payment('10');
      await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 1 });
      await refund(rid('due'), other, '4');
      await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 0 });
      expect((await refund(rid('due'), other, '5')).json.data).toMatchObject({ refundedAmount: '5.00000000', refundAmount: '5.00000000' });
    } finally {
      await control('PUT', '/sandbox/binance-pay/faults', { settleAfterMs: 100, refundFailRate: 0 });
    }
  });

  it('allows 10 refunds, the last one taking the whole remainder', async () => {
    const prepayId = await payment('100');
    for (let i = 1; i <= 9; i++) {
      const res = await refund(rid('ten'), prepayId, '1');
      expect(res.json.data.remainingAttempts).toBe(10 - i);
    }
    const last = await refund(rid('ten'), prepayId, '1');
    expect(last.json.data).toMatchObject({ refundAmount: '91.00000000', refundedAmount: '100.00000000', remainingAttempts: 0 });
    const over = await refund(rid('ten'), prepayId, '1');
    expect([over.status, over.json.code]).toEqual([200, '400302']);
    const order = await waitFor('FULL_REFUNDED', async () => {
      const o = await binance('v2/order/query', JSON.stringify({ prepayId }));
      return o.json.data.status === 'FULL_REFUNDED' && o;
    });
    expect(order.json.data.orderAmount).toBe('100.00000000');
    expect((await control('GET', `/sandbox/binance-pay/orders/${prepayId}`)).body).toMatchObject({
      refundedAmount: '100.00000000',
      remainingAttempts: 0,
    });
  });
});

describe('Binance Pay emulator: faults', () => {
  it('validates, merges and resets fault settings', async () => {
    expect((await control('DELETE', '/sandbox/binance-pay/faults')).body).toMatchObject({
      settleAfterMs: 1000,
      timestampWindowMs: 1000,
      duplicateMismatch: 'return_existing',
      insufficientBalance: false,
    });
    for (const bad of [
      { nope: 1 },
      { errorRate: 1.5 },
      { latencyMs: -1 },
      { latencyMs: '5' },
      { duplicateMismatch: 'x' },
      { malformedResponseRate: 2 },
      { rateLimitRate: -0.1 },
      { rateLimitRetryAfterSeconds: 1.5 },
      { rateLimitRetryAfterSeconds: 3_601 },
      { webhookJitterMs: -1 },
      [1],
    ]) {
      const res = await control('PUT', '/sandbox/binance-pay/faults', bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(typeof res.body.error).toBe('string');
    }
    await control('PUT', '/sandbox/binance-pay/faults', { latencyMs: 5 });
    const merged = await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 0.25 });
    expect(merged.body).toMatchObject({ latencyMs: 5, refundFailRate: 0.25, settleAfterMs: 1000 });
    // Every process sees the same settings.
    expect((await control('GET', '/sandbox/binance-pay/faults', undefined, b)).body).toEqual(merged.body);
  });

  it('refuses with 400304 when the merchant balance is too low', async () => {
    const prepayId = await payment('10');
    await control('PUT', '/sandbox/binance-pay/faults', { insufficientBalance: true });
    const res = await refund(rid('broke'), prepayId, '1');
    expect([res.status, res.json.status, res.json.code]).toEqual([200, 'FAIL', '400304']);
    expect(await emulatorRefunds(prepayId)).toEqual([]);
  });

  it('answers 500 before doing anything at the error rate', async () => {
    const prepayId = await payment('10');
    await control('PUT', '/sandbox/binance-pay/faults', { errorRate: 1 });
    const res = await refund(rid('err'), prepayId, '1');
    expect([res.status, res.json.status]).toEqual([500, 'FAIL']);
    expect(await emulatorRefunds(prepayId)).toEqual([]);
  });

  it('delays answers by latencyMs, judging the timestamp by arrival time', async () => {
    // Longer than the 1 s timestamp window: the request must still authenticate.
    await control('PUT', '/sandbox/binance-pay/faults', { latencyMs: 1_100 });
    const started = Date.now();
    const res = await binance('certificates', '{}');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_100);
    expect(res.json.status).toBe('SUCCESS');
    // Control endpoints are not slowed down.
    const t = Date.now();
    await control('GET', '/sandbox/binance-pay/faults');
    expect(Date.now() - t).toBeLessThan(1_000);
  });

  it('commits, then drops the connection unanswered (timeout after commit)', async () => {
    const prepayId = await payment('10');
    const id = rid('drop');
    await control('PUT', '/sandbox/binance-pay/faults', { timeoutAfterCommitRate: 1 });
    await expect(refund(id, prepayId, '4')).rejects.toThrow(/socket hang up/);
    const records = await emulatorRefunds(prepayId);
    expect(records).toEqual([expect.objectContaining({ refundRequestId: id, refundAmount: '4.00000000' })]);
    await control('PUT', '/sandbox/binance-pay/faults', { timeoutAfterCommitRate: 0 });
    // Recovery path: the query finds it, and a resend is a duplicate.
    expect((await queryRefund(id)).json.data.refundRequestId).toBe(id);
    expect((await refund(id, prepayId, '4')).json.data.duplicateRequest).toBe('Y');
  });

  it('answers 429 with Retry-After at rateLimitRate, before doing anything, and counts it', async () => {
    const prepayId = await payment('10');
    await control('DELETE', '/sandbox/binance-pay/faults/injected');
    await control('PUT', '/sandbox/binance-pay/faults', { rateLimitRate: 1, rateLimitRetryAfterSeconds: 3 });
    const res = await refund(rid('limited'), prepayId, '1');
    expect([res.status, res.headers['retry-after'], res.json.status, res.json.code]).toEqual([429, '3', 'FAIL', '400000']);
    expect(await emulatorRefunds(prepayId)).toEqual([]);
    await waitFor('counted', async () => (await control('GET', '/sandbox/binance-pay/faults/injected', undefined, b)).body.rate_limited === 1);
  });

  it('commits, then spoils the answer: cut short, cut off mid-body, or not JSON', async () => {
    const prepayId = await payment('10');
    const id = rid('spoiled');
    await control('DELETE', '/sandbox/binance-pay/faults/injected');
    await control('PUT', '/sandbox/binance-pay/faults', { malformedResponseRate: 1 });
    const mode = async (call: Promise<BinanceAnswer>): Promise<string> => {
      try {
        const res = await call;
        expect(res.status).toBe(200);
        expect(() => JSON.parse(res.text)).toThrow();
        return res.text.startsWith('<html>') ? 'not_json' : 'truncated';
      } catch (err) {
        expect((err as Error).message).toMatch(/aborted|ECONNRESET|socket hang up/);
        return 'cut_off';
      }
    };
    await mode(refund(id, prepayId, '4'));
    // The work was done and committed all the same.
    expect(await emulatorRefunds(prepayId)).toEqual([expect.objectContaining({ refundRequestId: id, refundAmount: '4.00000000' })]);
    const seen = new Set<string>();
    let calls = 1;
    for (; calls < 60 && seen.size < 3; calls++) seen.add(await mode(binance('certificates', '{}')));
    expect([...seen].sort()).toEqual(['cut_off', 'not_json', 'truncated']);
    await waitFor('counted', async () => {
      const n = (await control('GET', '/sandbox/binance-pay/faults/injected')).body;
      return (n.malformed_truncated ?? 0) + (n.malformed_cut_off ?? 0) + (n.malformed_not_json ?? 0) === calls;
    });
    await control('PUT', '/sandbox/binance-pay/faults', { malformedResponseRate: 0 });
    expect((await queryRefund(id)).json.data.refundRequestId).toBe(id);
  });

  it('fails refunds at refundFailRate and releases their amount', async () => {
    const prepayId = await payment('10');
    await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 1 });
    const id = rid('fail');
    await refund(id, prepayId, '10');
    await waitFor('REFUND_FAIL', async () => (await queryRefund(id)).json.data.refundStatus === 'REFUND_FAIL');
    const order = await control('GET', `/sandbox/binance-pay/orders/${prepayId}`);
    expect(order.body).toMatchObject({ status: 'PAID', refundedAmount: '0.00000000', pendingAmount: '0.00000000', remainingAttempts: 9 });
    await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 0 });
    expect((await refund(rid('fail'), prepayId, '10')).json.status).toBe('SUCCESS');
  });
});

describe('Binance Pay emulator: webhooks', () => {
  async function certificate(): Promise<{ certSerial: string; certPublic: string }> {
    return (await binance('certificates', '{}')).json.data[0];
  }

  function verify(hook: Hook, certPublic: string): boolean {
    return verifyBinanceWebhook(
      certPublic,
      String(hook.headers['binancepay-timestamp']),
      String(hook.headers['binancepay-nonce']),
      hook.body,
      String(hook.headers['binancepay-signature']),
    );
  }

  it('delivers a signed refund webhook, retrying after a 500, exactly once across processes', async () => {
    const prepayId = await payment('20');
    const path = `/hook/${rid('ok')}`;
    failFirst.set(path, 1);
    const id = rid('hook');
    const res = await refund(id, prepayId, '5', { webhookUrl: `${receiverUrl}${path}` });
    expect(res.json.status).toBe('SUCCESS');

    const received = await waitFor('two deliveries', async () => {
      const mine = hooks.filter((h) => h.path === path);
      return mine.length >= 2 && mine;
    });
    const { certSerial, certPublic } = await certificate();
    for (const hook of received) {
      expect(hook.headers['binancepay-certificate-sn']).toBe(certSerial);
      expect(hook.headers['binancepay-nonce']).toMatch(/^[A-Za-z0-9]{32}$/);
      expect(verify(hook, certPublic)).toBe(true);
      expect(verify({ ...hook, body: hook.body.replace('PAY_REFUND', 'PAY_REFUNX') }, certPublic)).toBe(false);
    }
    const body = received[1]!.body;
    expect(body).toContain(`"bizId":${prepayId},`); // a JSON number, above 2^53
    const outer = JSON.parse(body);
    expect(outer).toMatchObject({ bizType: 'PAY_REFUND', bizIdStr: prepayId, bizStatus: 'REFUND_SUCCESS' });
    const data = JSON.parse(outer.data);
    expect(data).toMatchObject({ currency: 'USDT', totalFee: 20 });
    expect(data.refundInfo).toMatchObject({
      refundRequestId: id,
      prepayId,
      orderAmount: '20.00000000',
      refundedAmount: '5.00000000',
      refundAmount: '5.00000000',
      remainingAttempts: 9,
      duplicateRequest: 'N',
    });

    const delivered = await waitFor('DELIVERED', async () => {
      const w = (await control('GET', `/sandbox/binance-pay/webhooks?prepayId=${prepayId}`)).body.data;
      return w.length === 1 && w[0].status === 'DELIVERED' && w;
    });
    expect(delivered[0]).toMatchObject({ attempts: 2, bizStatus: 'REFUND_SUCCESS' });
    // Two serving processes, one delivery: nothing more arrives.
    await new Promise((r) => setTimeout(r, 700));
    expect(hooks.filter((h) => h.path === path)).toHaveLength(2);
  });

  it('delays each webhook copy by webhookDelayMs plus its own 0..webhookJitterMs, so they can overtake each other', async () => {
    await control('PUT', '/sandbox/binance-pay/faults', { webhookDelayMs: 60_000, webhookJitterMs: 5_000, duplicateWebhookRate: 1 });
    const path = `/hook/${rid('jitter')}`;
    const prepayId = await payment('10');
    for (let i = 0; i < 3; i++) await refund(rid('jit'), prepayId, '1', { webhookUrl: `${receiverUrl}${path}` });
    const db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    try {
      const delays = await waitFor('six queued webhooks', async () => {
        const { rows } = await db.query(
          `SELECT extract(epoch FROM next_attempt_at - created_at) * 1000 AS ms FROM sandbox.binance_webhooks
            WHERE prepay_id = $1 AND status = 'PENDING'`,
          [prepayId],
        );
        return rows.length === 6 && rows.map((r) => Number(r.ms));
      });
      for (const ms of delays) expect(ms >= 60_000 && ms <= 65_000, String(ms)).toBe(true);
      expect(new Set(delays).size).toBeGreaterThan(1);
    } finally {
      await db.end();
    }
  });

  it('settles many orders in one batch, each with its own amounts, status and webhooks', async () => {
    // Nothing settles while the refunds go in; then they fall due at once (below).
    await control('PUT', '/sandbox/binance-pay/faults', { settleAfterMs: 600_000 });
    const path = `/hook/${rid('batch')}`;
    interface Planned {
      prepayId: string;
      amount: number;
      /** Refund request ids that fall due, with whether each fails. */
      due: Array<{ id: string; fails: boolean; amount: number }>;
      /** Refunds that stay pending (not due in the batch). */
      notDue: Array<{ id: string; amount: number }>;
    }
    const orders: Planned[] = [];
    for (let i = 0; i < 8; i++) {
      const amount = 10 * (i + 1);
      const o: Planned = { prepayId: await payment(String(amount)), amount, due: [], notDue: [] };
      // Order i gets i % 3 + 1 refunds of i + 1 each, every third order ten (refunded in full).
      // Order 3's refund fails; order 4's second fails beside a success; order 1's second is
      // not due yet, so that order stays REFUNDING with an amount pending.
      const count = i % 3 === 2 ? amount / (i + 1) : (i % 3) + 1;
      for (let k = 0; k < count; k++) {
        const id = rid('batch');
        const fails = (i === 3 && k === 0) || (i === 4 && k === 1);
        if (fails) await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 1 });
        const res = await refund(id, o.prepayId, String(i + 1), { webhookUrl: `${receiverUrl}${path}` });
        if (fails) await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 0 });
        expect(res.json.status).toBe('SUCCESS');
        if (i === 1 && k === 1) o.notDue.push({ id, amount: i + 1 });
        else o.due.push({ id, fails, amount: i + 1 });
      }
      orders.push(o);
    }
    const ids = orders.map((o) => o.prepayId);
    const dueIds = orders.flatMap((o) => o.due.map((d) => d.id));
    const db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    try {
      await db.query('UPDATE sandbox.binance_refunds SET settle_at = now() WHERE refund_request_id = ANY($1)', [dueIds]);
      // Delivered without any query of ours: the loop settled them (queries settle lazily too).
      // One webhook per due refund (a retried delivery could repeat one: keep the first).
      const received = await waitFor('a webhook for every due refund', async () => {
        const byId = new Map<string, any>();
        for (const h of hooks.filter((x) => x.path === path)) {
          const body = JSON.parse(h.body);
          const info = JSON.parse(body.data).refundInfo;
          if (!byId.has(info.refundRequestId)) byId.set(info.refundRequestId, { body, info });
        }
        return byId.size >= dueIds.length && byId;
      });
      expect(received.size).toBe(dueIds.length);
      for (const o of orders) {
        const refunded = o.due.filter((d) => !d.fails).reduce((n, d) => n + d.amount, 0);
        const pending = o.notDue.reduce((n, d) => n + d.amount, 0);
        for (const d of o.due) {
          // Each webhook describes its own refund and its own order as the settlement left it.
          const { body, info } = received.get(d.id);
          expect(body.bizIdStr).toBe(o.prepayId);
          expect(body.bizStatus).toBe(d.fails ? 'REFUND_REJECTED' : 'REFUND_SUCCESS');
          expect(info).toMatchObject({ orderAmount: o.amount.toFixed(8), refundedAmount: (refunded + pending).toFixed(8) });
        }
        for (const d of o.notDue) expect(received.has(d.id)).toBe(false);
      }
      const { rows } = await db.query<{ prepay_id: string; refunded_amount: string; pending_amount: string; status: string }>(
        'SELECT prepay_id, refunded_amount::text, pending_amount::text, status FROM sandbox.binance_orders WHERE prepay_id = ANY($1)',
        [ids],
      );
      for (const o of orders) {
        const row = rows.find((r) => r.prepay_id === o.prepayId)!;
        const refunded = o.due.filter((d) => !d.fails).reduce((n, d) => n + d.amount, 0);
        const pending = o.notDue.reduce((n, d) => n + d.amount, 0);
        expect([Number(row.refunded_amount), Number(row.pending_amount)]).toEqual([refunded, pending]);
        const status = pending > 0 ? 'REFUNDING' : refunded === 0 ? 'PAID' : refunded === o.amount ? 'FULL_REFUNDED' : 'REFUNDED';
        expect(row.status).toBe(status);
      }
      // Settled together: one transaction, one now(), for the refunds of several orders.
      const { rows: batches } = await db.query<{ orders: number }>(
        `SELECT count(DISTINCT prepay_id)::int AS orders FROM sandbox.binance_refunds
          WHERE prepay_id = ANY($1) AND settled_at IS NOT NULL GROUP BY settled_at ORDER BY 1 DESC LIMIT 1`,
        [ids],
      );
      expect(batches[0]!.orders).toBeGreaterThan(1);
    } finally {
      await db.end();
    }
  });

  it('settles due refunds of free orders while earlier ones wait on orders locked elsewhere', async () => {
    await control('PUT', '/sandbox/binance-pay/faults', { settleAfterMs: 600_000 });
    // Fifty due refunds on five orders someone else holds, more than one batch takes, all due
    // before the one refund of a free order.
    const locked: string[] = [];
    for (let i = 0; i < 5; i++) {
      const prepayId = await payment('10');
      for (let k = 0; k < 10; k++) expect((await refund(rid('held'), prepayId, '1')).json.status).toBe('SUCCESS');
      locked.push(prepayId);
    }
    const free = await payment('10');
    const freeId = rid('free');
    expect((await refund(freeId, free, '1')).json.status).toBe('SUCCESS');
    // The holder locks the five orders, then everything falls due: theirs first.
    const holder = new pg.Client({ connectionString: dbUrl });
    const other = new pg.Client({ connectionString: dbUrl });
    await holder.connect();
    await other.connect();
    const pendingHeld = async () =>
      (
        await other.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM sandbox.binance_refunds WHERE prepay_id = ANY($1) AND status = 'REFUND_PENDING'`,
          [locked],
        )
      ).rows[0]!.n;
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM sandbox.binance_orders WHERE prepay_id = ANY($1) FOR UPDATE', [locked]);
      await other.query(`UPDATE sandbox.binance_refunds SET settle_at = now() - interval '1 minute' WHERE prepay_id = ANY($1)`, [locked]);
      await other.query('UPDATE sandbox.binance_refunds SET settle_at = now() WHERE refund_request_id = $1', [freeId]);
      await waitFor('the free order settled', async () => {
        const { rows } = await other.query('SELECT status FROM sandbox.binance_refunds WHERE refund_request_id = $1', [freeId]);
        return rows[0]?.status === 'REFUND_SUCCESS';
      });
      expect(await pendingHeld()).toBe(50);
      await holder.query('ROLLBACK');
      await waitFor('the held orders settled once free', async () => (await pendingHeld()) === 0);
    } finally {
      await holder.end();
      await other.end();
    }
  });

  it('settles and delivers while every connection of the serving processes\' pools is taken: the loops have their own', async () => {
    // Not due until the connections are taken (then made due by hand below).
    await control('PUT', '/sandbox/binance-pay/faults', { settleAfterMs: 600_000 });
    const prepayId = await payment('10');
    const path = `/hook/${rid('busy')}`;
    const id = rid('busy');
    expect((await refund(id, prepayId, '2', { webhookUrl: `${receiverUrl}${path}` })).json.status).toBe('SUCCESS');
    // Both processes sign webhooks with the credentials they cache on first use: loaded now,
    // so neither has to read them through the pool about to be taken.
    for (const served of [a, b]) await served.app.get(SandboxCredentials).binancePayMerchant();
    const held: pg.PoolClient[] = [];
    const probe = new pg.Client({ connectionString: dbUrl });
    await probe.connect();
    try {
      // Every connection of both processes' pools, as under a load of API calls that all wait
      // for one. Before the loops had connections of their own, they waited in that line too.
      for (const served of [a, b]) {
        const pool = served.app.get(Database).pool;
        for (let i = 0; i < pool.options.max; i++) held.push(await pool.connect());
      }
      const status = async () =>
        (await probe.query('SELECT status FROM sandbox.binance_refunds WHERE refund_request_id = $1', [id])).rows[0]?.status;
      expect(await status()).toBe('REFUND_PENDING');
      await probe.query('UPDATE sandbox.binance_refunds SET settle_at = now() WHERE refund_request_id = $1', [id]);
      // Within the pools' connection timeout (5 s), so a loop still using them would not get there.
      const hook = await waitFor('the webhook', async () => hooks.find((h) => h.path === path), 4_000);
      expect(JSON.parse(hook.body).bizStatus).toBe('REFUND_SUCCESS');
      expect(await status()).toBe('REFUND_SUCCESS');
    } finally {
      for (const client of held) client.release();
      await probe.end();
    }
  });

  it('keeps several batches of a backlog of deliveries in flight at once, up to MAX_LANES', async () => {
    const db = a.app.get(SandboxStore).background;
    await db.query(
      `CREATE TABLE lane_hooks (id bigserial PRIMARY KEY, url text NOT NULL, status text NOT NULL DEFAULT 'PENDING',
         attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL DEFAULT now(), last_error text, delivered_at timestamptz)`,
    );
    let inFlight = 0;
    let peak = 0;
    // A receiver that takes its time, so a batch is still open when the next is claimed.
    const slow = http.createServer((req, res) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      req.resume();
      setTimeout(() => {
        inFlight--;
        res.writeHead(200).end('ok');
      }, 200);
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/`;
    try {
      const batch = 10;
      await db.query(`INSERT INTO lane_hooks (url) SELECT $1 FROM generate_series(1, $2)`, [url, 10 * batch]);
      const deliveries = new WebhookDeliveries<DueWebhook>(db, new Logger('lanes'), {
        table: 'lane_hooks',
        columns: [],
        batch,
        timeoutMs: 5_000,
        leaseMs: 30_000,
        request: async () => ({ body: '{}', headers: {} }),
        acknowledged: (status) => status === 200,
        retryDelay: () => 1_000,
        maxAttempts: 2,
      });
      await deliveries.deliverDue(new AbortController().signal);
      const [row] = await db.query<{ delivered: number }>(`SELECT count(*) FILTER (WHERE status = 'DELIVERED')::int AS delivered FROM lane_hooks`);
      expect(row!.delivered).toBe(10 * batch);
      // One batch at a time would never have more than `batch` open.
      expect(peak).toBeGreaterThan(batch);
      expect(peak).toBeLessThanOrEqual(MAX_LANES * batch);
    } finally {
      await new Promise((resolve) => slow.close(resolve));
      await db.query('DROP TABLE IF EXISTS lane_hooks');
    }
  });

  it('sends REFUND_REJECTED for failed refunds, and applies the drop and duplicate faults', async () => {
    await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 1, duplicateWebhookRate: 1 });
    const rejectedPath = `/hook/${rid('rejected')}`;
    const p1 = await payment('3');
    await refund(rid('rej'), p1, '3', { webhookUrl: `${receiverUrl}${rejectedPath}` });
    // Webhook faults apply when the refund settles, so wait for these before changing them.
    const twice = await waitFor('duplicated webhook', async () => {
      const mine = hooks.filter((h) => h.path === rejectedPath);
      return mine.length === 2 && mine;
    });
    expect(twice.map((h) => JSON.parse(h.body).bizStatus)).toEqual(['REFUND_REJECTED', 'REFUND_REJECTED']);

    await control('PUT', '/sandbox/binance-pay/faults', { refundFailRate: 0, duplicateWebhookRate: 0, dropWebhookRate: 1 });
    const droppedPath = `/hook/${rid('dropped')}`;
    const p2 = await payment('3');
    await refund(rid('drop'), p2, '3', { webhookUrl: `${receiverUrl}${droppedPath}` });
    await waitFor('dropped webhook recorded', async () => {
      const w = (await control('GET', `/sandbox/binance-pay/webhooks?prepayId=${p2}`)).body.data;
      return w.length === 1 && w[0].status === 'DROPPED';
    });
    expect(hooks.filter((h) => h.path === droppedPath)).toHaveLength(0);
  });
});

describe('Binance Pay emulator: restarts', () => {
  it('keeps credentials and records across a process restart', async () => {
    const prepayId = await payment('10');
    const id = rid('restart');
    await refund(id, prepayId, '2', {}); // created through process a
    await b.app.close();
    b = await boot(dbUrl);
    expect(await b.app.get(SandboxCredentials).binancePay()).toEqual(creds);
    const q = await binance('order/refund/query', JSON.stringify({ refundRequestId: id }), { via: b });
    expect(q.json.data).toMatchObject({ refundRequestId: id, refundAmount: '2.00000000' });
  });
});
