import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { configureBodiesAndErrors, createHttpAdapter } from '../src/app.js';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { ConfigModule } from '../src/config/config.module.js';
import { DatabaseModule } from '../src/database/database.module.js';
import { coboHeaders, ed25519PublicHex, signCoboRequest, verifyCoboResponse } from '../src/providers/cobo/cobo.signing.js';
import { SandboxCredentials } from '../src/sandbox/sandbox-credentials.js';
import { SandboxModule } from '../src/sandbox/sandbox.module.js';
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
  raw: Buffer;
  text: string;
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
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          resolve({ status: res.statusCode!, raw, text: raw.toString('utf8'), headers: res.headers });
        });
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
let creds: { apiPrivateKey: string; coboPublicKey: string };

/** JSON control endpoints of the sandbox (not the Cobo protocol). */
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

const API = '/sandbox/cobo/v2';

interface CoboAnswer extends Answer {
  json: any;
  /** Whether Biz-Resp-Signature verifies with the emulator's public key over the exact bytes. */
  signed: boolean;
}

function verified(res: Answer): boolean {
  const ts = res.headers['biz-timestamp'];
  const sig = res.headers['biz-resp-signature'];
  if (typeof ts !== 'string' || typeof sig !== 'string') return false;
  return verifyCoboResponse(creds.coboPublicKey, res.raw, ts, sig);
}

/**
 * A signed API call. The signature covers the full pathname as sent (with /sandbox/cobo).
 * Every answer must carry a valid signature unless `unsigned` says the test expects otherwise.
 */
async function cobo(
  method: string,
  path: string,
  opts: {
    query?: string;
    body?: unknown;
    via?: Booted;
    headers?: Record<string, string | undefined>;
    seed?: string;
    /** Send this body instead of the signed one. */
    sendBody?: string;
    allowBadSignature?: boolean;
  } = {},
): Promise<CoboAnswer> {
  const fullPath = `${API}${path}`;
  const query = opts.query ?? '';
  const body = opts.body === undefined ? '' : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  const headers: Record<string, string | undefined> = {
    ...coboHeaders(opts.seed ?? creds.apiPrivateKey, method, fullPath, query, body),
    ...(body ? { 'content-type': 'application/json' } : {}),
    ...opts.headers,
  };
  const clean = Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== undefined)) as Record<string, string>;
  const sent = opts.sendBody ?? body;
  const res = await request((opts.via ?? a).base, method, `${fullPath}${query ? `?${query}` : ''}`, sent || undefined, clean);
  let json: unknown;
  try {
    json = JSON.parse(res.text);
  } catch {
    /* asserted by the caller */
  }
  const signed = verified(res);
  if (!opts.allowBadSignature) expect(signed, `signed answer to ${method} ${path}: ${res.text}`).toBe(true);
  return { ...res, json, signed };
}

let seq = 0;
const rid = (label: string) => `${label}-${Date.now()}-${seq++}`;

async function payment(amount: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await control('POST', '/sandbox/payments', { provider: 'cobo', amount, currency: 'USDT', ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.paymentId as string;
}

function refundBody(orderId: string | undefined, amount: string, extra: Record<string, unknown> = {}) {
  return {
    request_id: rid('req'),
    payable_amount: amount,
    token_id: 'TRON_USDT',
    refund_type: 'Merchant',
    ...(orderId ? { order_id: orderId } : {}),
    to_address: 'TXsandboxRecipient',
    ...extra,
  };
}

const createRefund = (body: Record<string, unknown>, via?: Booted) => cobo('POST', '/payments/refunds', { body, via });
const getRefund = (id: string, via?: Booted) => cobo('GET', `/payments/refunds/${id}`, { via });

async function until(id: string, statuses: string[]): Promise<any> {
  return waitFor(`refund ${id} in ${statuses.join('/')}`, async () => {
    const res = await getRefund(id);
    expect(res.status).toBe(200);
    return statuses.includes(res.json.status) && res.json;
  });
}

async function records(orderId: string): Promise<any[]> {
  const res = await control('GET', `/sandbox/cobo/refunds?order_id=${encodeURIComponent(orderId)}`);
  expect(res.status).toBe(200);
  return res.body.data;
}

function expectError(res: CoboAnswer, httpStatus: number, code: number) {
  expect({ status: res.status, code: res.json?.error_code }, res.text).toEqual({ status: httpStatus, code });
  expect(typeof res.json.error_message).toBe('string');
  expect(res.json.error_id).toMatch(/^[0-9a-f]{32}$/);
}

// --- webhook receiver -------------------------------------------------------------------

interface Hook {
  path: string;
  headers: http.IncomingHttpHeaders;
  raw: Buffer;
  json: any;
}
const hooks: Hook[] = [];
/** Paths that answer 500 to the first delivery of each event (refunds of earlier tests may post there too). */
const failFirstOfEach = new Set<string>();
const seenEvents = new Set<string>();
let receiver: http.Server;
let receiverUrl: string;

beforeAll(async () => {
  dbUrl = await createTestDatabase('sandbox_cobo');
  // Two processes starting at once exercise the schema creation lock.
  [a, b] = await Promise.all([boot(dbUrl), boot(dbUrl)]);
  creds = await a.app.get(SandboxCredentials).cobo();

  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const raw = Buffer.concat(chunks);
      const json = JSON.parse(raw.toString('utf8'));
      hooks.push({ path, headers: req.headers, raw, json });
      const event = `${path}#${json.event_id}`;
      if (failFirstOfEach.has(path) && !seenEvents.has(event)) {
        seenEvents.add(event);
        res.writeHead(500, { 'content-type': 'text/plain' }).end('try later');
        return;
      }
      res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}');
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
  expect((await control('DELETE', '/sandbox/cobo/faults')).status).toBe(200);
  // Fast lifecycle keeps the file short; the defaults are asserted in the faults test.
  expect((await control('PUT', '/sandbox/cobo/faults', { processAfterMs: 100, settleAfterMs: 200 })).status).toBe(200);
});

// ---------------------------------------------------------------------------------------

describe('Cobo emulator: credentials and seeded orders', () => {
  it('shares one generated key set per database across processes', async () => {
    expect(Object.keys(creds).sort()).toEqual(['apiPrivateKey', 'coboPublicKey']);
    expect(creds.apiPrivateKey).toMatch(/^[0-9a-f]{64}$/);
    const emulator = await b.app.get(SandboxCredentials).coboEmulator();
    expect(emulator.apiPrivateKey).toBe(creds.apiPrivateKey);
    expect(emulator.apiPublicKey).toBe(ed25519PublicHex(creds.apiPrivateKey));
    expect(emulator.coboPublicKey).toBe(creds.coboPublicKey);
    expect(ed25519PublicHex(emulator.emulatorSeed)).toBe(creds.coboPublicKey);
  });

  it('seeds pay-in orders and serves them through the API', async () => {
    const created = await control('POST', '/sandbox/payments', { provider: 'cobo', amount: '100.00', currency: 'USDT' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ provider: 'cobo', amount: '100.00', currency: 'USDT', status: 'Completed' });
    expect(created.body.paymentId).toMatch(/^O\d{8}-M1001-\d+$/);
    const order = await cobo('GET', `/payments/orders/${created.body.paymentId}`, { via: b });
    expect(order.status).toBe(200);
    expect(order.json).toMatchObject({
      order_id: created.body.paymentId,
      merchant_id: 'M1001',
      token_id: 'TRON_USDT',
      chain_id: 'TRON',
      payable_amount: '100.00',
      received_token_amount: '100.00',
      currency: 'USD',
      order_amount: '100.00',
      status: 'Completed',
    });
    expect(order.json.created_timestamp).toBeLessThan(1e11); // seconds

    const usdc = await payment('5', { currency: 'USDC', merchantId: 'M2002' });
    expect(usdc).toMatch(/^O\d{8}-M2002-\d+$/);
    expect((await cobo('GET', `/payments/orders/${usdc}`)).json).toMatchObject({ token_id: 'ETH_USDC', merchant_id: 'M2002' });
    const underpaid = await payment('10', { status: 'Underpaid', tokenId: 'BSC_USDT' });
    expect((await cobo('GET', `/payments/orders/${underpaid}`)).json).toMatchObject({
      status: 'Underpaid',
      token_id: 'BSC_USDT',
      payable_amount: '10',
      received_token_amount: '5',
    });
    const list = await control('GET', '/sandbox/payments');
    expect(list.body.data.map((p: { paymentId: string }) => p.paymentId)).toContain(usdc);

    const bad = async (body: Record<string, unknown>) => {
      const res = await control('POST', '/sandbox/payments', { provider: 'cobo', amount: '1', currency: 'USDT', ...body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(typeof res.body.error).toBe('string');
    };
    await bad({ currency: 'EUR' });
    await bad({ tokenId: 'ETH_USDC' });
    await bad({ tokenId: 'DOGE' });
    await bad({ merchantId: 'bad id' });
    await bad({ status: 'Processing' });
    const binanceWithToken = await control('POST', '/sandbox/payments', {
      provider: 'binance_pay',
      amount: '1',
      currency: 'USDT',
      tokenId: 'TRON_USDT',
    });
    expect(binanceWithToken.status).toBe(400);

    expectError(await cobo('GET', '/payments/orders/O20990101-M1001-1'), 404, 2028);
  });
});

describe('Cobo emulator: refund lifecycle', () => {
  it('creates a refund (201) and takes it through Processing to Completed with its transaction', async () => {
    const orderId = await payment('100.00');
    const body = refundBody(orderId, '25.17', { merchant_id: 'M1001' });
    const res = await createRefund(body);
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const refund = res.json;
    expect(refund).toMatchObject({
      request_id: body.request_id,
      order_id: orderId,
      merchant_id: 'M1001',
      token_id: 'TRON_USDT',
      chain_id: 'TRON',
      amount: '25.17',
      to_address: 'TXsandboxRecipient',
      status: 'Pending',
      refund_type: 'Merchant',
      charge_merchant_fee: false,
      commission_fee: { fee_amount: '0.1' },
      transactions: [],
    });
    expect(refund.refund_id).toMatch(/^R\d{8}-M1001-\d+$/);
    expect(refund.created_timestamp).toBeLessThan(1e11); // seconds
    expect(Math.abs(refund.created_timestamp - Date.now() / 1000)).toBeLessThan(60);

    const done = await until(refund.refund_id, ['Completed']);
    expect(done.transactions).toHaveLength(1);
    const [tx] = done.transactions;
    expect(tx).toMatchObject({
      amount: '25.17',
      token_id: 'TRON_USDT',
      to_address: 'TXsandboxRecipient',
      status: 'Completed',
    });
    expect(tx.tx_id).toBeTruthy();
    expect(tx.tx_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(tx.from_address).toBeTruthy();
    expect(tx.created_timestamp).toBeGreaterThan(1e12); // milliseconds
    expect(tx.updated_timestamp).toBeGreaterThanOrEqual(tx.created_timestamp);
    expect(done.updated_timestamp).toBeLessThan(1e11);

    // Any process answers from the same state.
    expect((await getRefund(refund.refund_id, b)).json).toEqual(done);
    const [record] = await records(orderId);
    expect(record).toMatchObject({ refund_id: refund.refund_id, request_id: body.request_id, status: 'Completed', outcome: 'Completed' });
    const inspected = await control('GET', `/sandbox/cobo/orders/${orderId}`);
    expect(inspected.body).toMatchObject({ reserved_amount: '25.17', refundable_amount: '74.83' });
  });

  it('waits in PendingConfirmation without an address until an update supplies one', async () => {
    const orderId = await payment('50');
    const res = await createRefund(refundBody(orderId, '20', { to_address: undefined }));
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({ status: 'PendingConfirmation', to_address: '' });
    const id = res.json.refund_id;
    // It does not move on its own.
    await new Promise((r) => setTimeout(r, 500));
    expect((await getRefund(id)).json.status).toBe('PendingConfirmation');

    expectError(await cobo('PUT', `/payments/refunds/${id}`, { body: {} }), 400, 2003);
    expectError(await cobo('PUT', `/payments/refunds/${id}`, { body: { to_address: 'TX later' } }), 400, 2006);
    expectError(await cobo('PUT', `/payments/refunds/${id}`, { body: { to_address: 'TX1', amount: '1' } }), 400, 2006);
    const updated = await cobo('PUT', `/payments/refunds/${id}`, { body: { to_address: 'TXlater' } });
    expect(updated.status).toBe(200);
    expect(updated.json).toMatchObject({ refund_id: id, status: 'Pending', to_address: 'TXlater' });
    const done = await until(id, ['Completed']);
    expect(done.transactions[0]).toMatchObject({ to_address: 'TXlater', amount: '20', status: 'Completed' });
    const late = await cobo('PUT', `/payments/refunds/${id}`, { body: { to_address: 'TXtoolate' } });
    expectError(late, 400, 2029);
    expectError(await cobo('PUT', '/payments/refunds/R-nope', { body: { to_address: 'TX' } }), 404, 2028);
  });

  it('cancels before processing (Failed, amount released) and refuses once processing started', async () => {
    const orderId = await payment('30');
    const waiting = await createRefund(refundBody(orderId, '30', { to_address: undefined }));
    const canceled = await cobo('PUT', `/payments/refunds/${waiting.json.refund_id}/cancel`);
    expect(canceled.status).toBe(200);
    expect(canceled.json).toMatchObject({ status: 'Failed', failed_reason: 'Canceled by merchant', transactions: [] });
    expectError(await cobo('PUT', `/payments/refunds/${waiting.json.refund_id}/cancel`), 400, 2029);

    // A Pending one can be canceled too; the whole amount is refundable again afterwards.
    await control('PUT', '/sandbox/cobo/faults', { processAfterMs: 60_000 });
    const pending = await createRefund(refundBody(orderId, '30'));
    expect(pending.json.status).toBe('Pending');
    expect((await cobo('PUT', `/payments/refunds/${pending.json.refund_id}/cancel`)).json.status).toBe('Failed');
    await control('PUT', '/sandbox/cobo/faults', { processAfterMs: 100 });

    const again = await createRefund(refundBody(orderId, '30'));
    expect(again.status).toBe(201);
    await until(again.json.refund_id, ['Processing', 'Completed']);
    expectError(await cobo('PUT', `/payments/refunds/${again.json.refund_id}/cancel`), 400, 2029);
    expectError(await cobo('PUT', `/payments/refunds/${again.json.refund_id}`, { body: { to_address: 'TXx' } }), 400, 2029);
    expect((await until(again.json.refund_id, ['Completed'])).amount).toBe('30');
    expect((await records(orderId)).map((r) => r.status)).toEqual(['Failed', 'Failed', 'Completed']);
  });

  it('splits a PARTIAL refund into a completed and a failed transaction and frees the failed part', async () => {
    const orderId = await payment('40');
    const res = await createRefund(refundBody(orderId, '40.01', { to_address: 'PARTIAL-addr' }));
    expectError(res, 400, 2006); // more than the order
    const partial = await createRefund(refundBody(orderId, '40', { to_address: 'PARTIAL-addr' }));
    const done = await until(partial.json.refund_id, ['PartiallyCompleted', 'Completed', 'Failed']);
    expect(done.status).toBe('PartiallyCompleted');
    expect(done.transactions.map((t: any) => [t.amount, t.status])).toEqual([
      ['20', 'Completed'],
      ['20', 'Failed'],
    ]);
    // The failed half is refundable again, not a cent more.
    expectError(await createRefund(refundBody(orderId, '20.01')), 400, 2006);
    const rest = await createRefund(refundBody(orderId, '20', { to_address: 'FAIL-addr' }));
    expect(rest.status).toBe(201);
    const failed = await until(rest.json.refund_id, ['Failed', 'Completed']);
    expect(failed).toMatchObject({ status: 'Failed', failed_reason: expect.any(String) });
    expect(failed.transactions.map((t: any) => t.status)).toEqual(['Failed']);
    // A Failed refund releases its whole amount.
    expect((await createRefund(refundBody(orderId, '20'))).status).toBe(201);
    expect((await control('GET', `/sandbox/cobo/orders/${orderId}`)).body.refundable_amount).toBe('0');
  });

  it('applies partialCompletedRatio (rounded down to 2 decimals) and failRate', async () => {
    await control('PUT', '/sandbox/cobo/faults', { partialRate: 1, partialCompletedRatio: 0.333 });
    const orderId = await payment('10');
    const partial = await createRefund(refundBody(orderId, '1.00'));
    const done = await until(partial.json.refund_id, ['PartiallyCompleted']);
    expect(done.transactions.map((t: any) => t.amount)).toEqual(['0.33', '0.67']);
    await control('PUT', '/sandbox/cobo/faults', { partialRate: 0, failRate: 1 });
    const failing = await createRefund(refundBody(orderId, '2'));
    expect((await until(failing.json.refund_id, ['Failed', 'Completed'])).status).toBe('Failed');
  });
});

describe('Cobo emulator: request rules', () => {
  it('refuses a repeated request_id with 2040, or returns the stored refund when configured', async () => {
    const orderId = await payment('10');
    const body = refundBody(orderId, '1');
    const first = await createRefund(body);
    expect(first.status).toBe(201);
    expectError(await createRefund(body, b), 400, 2040);
    await control('PUT', '/sandbox/cobo/faults', { duplicateRequestId: 'return_existing' });
    const replay = await createRefund(body);
    expect([replay.status, replay.json.refund_id]).toEqual([201, first.json.refund_id]);
    expect(await records(orderId)).toHaveLength(1);
  });

  it('creates one refund for simultaneous requests with one request_id', async () => {
    const orderId = await payment('10');
    const body = refundBody(orderId, '7');
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => createRefund(body, i % 2 ? b : a)));
    expect(answers.filter((r) => r.status === 201)).toHaveLength(1);
    expect(answers.filter((r) => r.status === 400).map((r) => r.json.error_code)).toEqual(Array(9).fill(2040));
    expect(await records(orderId)).toHaveLength(1);
  });

  it('never refunds more than the order received under concurrency', async () => {
    const orderId = await payment('100');
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) => createRefund(refundBody(orderId, '30'), i % 2 ? b : a)),
    );
    expect(answers.filter((r) => r.status === 201)).toHaveLength(3);
    expect(answers.filter((r) => r.status !== 201).map((r) => [r.status, r.json.error_code])).toEqual(Array(5).fill([400, 2006]));
    const stored = await records(orderId);
    expect(stored.reduce((sum, r) => sum + Number(r.amount), 0)).toBe(90);
    expectError(await createRefund(refundBody(orderId, '10.01')), 400, 2006);
    expect((await createRefund(refundBody(orderId, '10'))).status).toBe(201);
  });

  it('validates CreateRefundRequest (2003 missing, 2006 bad, 2028 unknown, 12002 balance)', async () => {
    const orderId = await payment('10');
    const other = await payment('10', { merchantId: 'M3003' });
    const cases: Array<[Record<string, unknown>, number, number]> = [
      [{ ...refundBody(orderId, '1'), request_id: undefined }, 400, 2003],
      [{ ...refundBody(orderId, '1'), payable_amount: undefined }, 400, 2003],
      [{ ...refundBody(orderId, '1'), token_id: undefined }, 400, 2003],
      [{ ...refundBody(orderId, '1'), refund_type: undefined }, 400, 2003],
      [refundBody(orderId, '1.005'), 400, 2006],
      [refundBody(orderId, '0'), 400, 2006],
      [refundBody(orderId, '-1'), 400, 2006],
      [{ ...refundBody(orderId, '1'), payable_amount: 1 }, 400, 2006],
      [refundBody(orderId, '1', { token_id: 'DOGE_COIN' }), 400, 2006],
      [refundBody(orderId, '1', { token_id: 'ETH_USDT' }), 400, 2006], // not the order's token
      [refundBody(orderId, '1', { refund_type: 'Both' }), 400, 2006],
      [refundBody(orderId, '1', { orderId }), 400, 2006], // unknown field
      [refundBody(orderId, '1', { charge_merchant_fee: 'yes' }), 400, 2006],
      [refundBody(orderId, '1', { charge_merchant_fee: true }), 400, 2003],
      [refundBody(orderId, '1', { charge_merchant_fee: true, merchant_fee_amount: '1', merchant_fee_token_id: 'TRON_USDT' }), 400, 2006],
      [refundBody(orderId, '1', { charge_merchant_fee: true, merchant_fee_amount: '0.001', merchant_fee_token_id: 'TRON_USDT' }), 400, 2006],
      [refundBody(orderId, '1', { charge_merchant_fee: true, merchant_fee_amount: '0.1', merchant_fee_token_id: 'ETH_USDT' }), 400, 2006],
      [refundBody(orderId, '1', { refund_type: 'Psp', charge_merchant_fee: true, merchant_fee_amount: '0.1', merchant_fee_token_id: 'TRON_USDT' }), 400, 2006],
      [refundBody(orderId, '1', { merchant_fee_amount: '0.1' }), 400, 2006],
      [refundBody(orderId, '1', { to_address: '' }), 400, 2006],
      [refundBody('O20990101-M1001-1', '1'), 404, 2028],
      [refundBody(orderId, '1', { merchant_id: 'M9999' }), 404, 2028],
      [refundBody(other, '1', { merchant_id: 'M1001' }), 400, 2006], // not that merchant's order
      [refundBody(undefined, '1', { merchant_id: 'M9999' }), 404, 2028],
    ];
    for (const [body, status, code] of cases) {
      const res = await createRefund(body);
      expect({ body, status: res.status, code: res.json?.error_code }).toEqual({ body, status, code });
    }
    const malformed = await cobo('POST', '/payments/refunds', { body: '{"request_id":' });
    expectError(malformed, 400, 2006);
    expect(await records(orderId)).toEqual([]);

    const fee = await createRefund(
      refundBody(orderId, '2', { charge_merchant_fee: true, merchant_fee_amount: '0.10', merchant_fee_token_id: 'TRON_USDT' }),
    );
    expect(fee.json).toMatchObject({ charge_merchant_fee: true, merchant_fee_amount: '0.10', merchant_fee_token_id: 'TRON_USDT' });
    // A body of another content type is kept as sent (rawBody) and signed over as sent.
    const plain = await cobo('POST', '/payments/refunds', { body: refundBody(orderId, '1'), headers: { 'content-type': 'text/plain' } });
    expect(plain.status).toBe(201);
    // Without an order: no refundable cap, merchant optional.
    expect((await createRefund(refundBody(undefined, '500', { refund_type: 'Psp' }))).status).toBe(201);

    await control('PUT', '/sandbox/cobo/faults', { insufficientBalance: true });
    expectError(await createRefund(refundBody(orderId, '1')), 400, 12002);
    expect(await records(orderId)).toHaveLength(2);
  });
});

describe('Cobo emulator: authentication', () => {
  const body = () => JSON.stringify(refundBody(undefined, '1', { refund_type: 'Psp' }));
  const path = `${API}/payments/refunds`;

  it('rejects a body altered after signing, a wrong path or query, and a stale nonce with 2023', async () => {
    const signed = body();
    expectError(await cobo('POST', '/payments/refunds', { body: signed, sendBody: signed.replace('"1"', '"2"') }), 401, 2023);
    // Signed over the path without the sandbox prefix: the emulator checks the full pathname.
    const nonce = String(Date.now());
    const short = signCoboRequest(creds.apiPrivateKey, 'POST', '/v2/payments/refunds', nonce, '', signed);
    expectError(await cobo('POST', '/payments/refunds', { body: signed, headers: { 'Biz-Api-Nonce': nonce, 'Biz-Api-Signature': short } }), 401, 2023);
    // Query changed after signing.
    const q = 'request_id=abc';
    const qNonce = String(Date.now());
    const qSig = signCoboRequest(creds.apiPrivateKey, 'GET', path, qNonce, 'request_id=abd', '');
    expectError(await cobo('GET', '/payments/refunds', { query: q, headers: { 'Biz-Api-Nonce': qNonce, 'Biz-Api-Signature': qSig } }), 401, 2023);
    // Stale nonce, correctly signed.
    const old = String(Date.now() - 301_000);
    const oldSig = signCoboRequest(creds.apiPrivateKey, 'POST', path, old, '', signed);
    expectError(await cobo('POST', '/payments/refunds', { body: signed, headers: { 'Biz-Api-Nonce': old, 'Biz-Api-Signature': oldSig } }), 401, 2023);
    await control('PUT', '/sandbox/cobo/faults', { nonceWindowMs: 3_600_000 });
    expect((await cobo('POST', '/payments/refunds', { body: signed, headers: { 'Biz-Api-Nonce': old, 'Biz-Api-Signature': oldSig } })).status).toBe(201);
  });

  it('rejects an unknown key with 2024 and missing headers with 2022', async () => {
    const stranger = randomBytes(32).toString('hex');
    expectError(await cobo('POST', '/payments/refunds', { body: body(), seed: stranger }), 401, 2024);
    expectError(await cobo('GET', '/payments/refunds', { headers: { 'Biz-Api-Signature': undefined } }), 401, 2022);
    expectError(await cobo('GET', '/payments/refunds', { headers: { 'Biz-Api-Key': undefined } }), 401, 2022);
    const none = await request(a.base, 'GET', `${API}/payments/refunds`);
    expect(verified(none)).toBe(true);
    expect(JSON.parse(none.text).error_code).toBe(2022);
  });

  it('answers unknown routes with 2021 and wrong methods with 2002, signed', async () => {
    expectError(await cobo('GET', '/payments/nothing'), 404, 2021);
    expectError(await cobo('DELETE', '/payments/refunds/R1'), 405, 2002);
    expectError(await cobo('GET', '/payments/nothing', { seed: randomBytes(32).toString('hex') }), 401, 2024);
  });
});

describe('Cobo emulator: listing', () => {
  it('finds a refund by request_id and pages newest first with working cursors', async () => {
    const merchantId = `MP${Date.now()}`;
    const orderId = await payment('100', { merchantId });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await createRefund(refundBody(orderId, '1', { to_address: undefined }));
      ids.push(res.json.refund_id);
    }
    const newestFirst = [...ids].reverse();
    const byRequest = await cobo('GET', '/payments/refunds', {
      query: `request_id=${encodeURIComponent((await getRefund(ids[2]!)).json.request_id)}`,
    });
    expect(byRequest.json.data.map((r: any) => r.refund_id)).toEqual([ids[2]]);
    expect(byRequest.json.pagination).toEqual({ before: '', after: '', total_count: 1 });
    expect((await cobo('GET', '/payments/refunds', { query: 'request_id=nobody' })).json).toEqual({
      data: [],
      pagination: { before: '', after: '', total_count: 0 },
    });

    const page = (query: string) => cobo('GET', '/payments/refunds', { query: `merchant_id=${merchantId}&limit=2${query}` });
    const p1 = await page('');
    expect(p1.json.data.map((r: any) => r.refund_id)).toEqual(newestFirst.slice(0, 2));
    expect(p1.json.pagination).toMatchObject({ before: '', total_count: 5 });
    const p2 = await page(`&after=${p1.json.pagination.after}`);
    expect(p2.json.data.map((r: any) => r.refund_id)).toEqual(newestFirst.slice(2, 4));
    const p3 = await page(`&after=${p2.json.pagination.after}`);
    expect(p3.json.data.map((r: any) => r.refund_id)).toEqual(newestFirst.slice(4));
    expect(p3.json.pagination.after).toBe('');
    const back = await page(`&before=${p3.json.pagination.before}`);
    expect(back.json.data.map((r: any) => r.refund_id)).toEqual(newestFirst.slice(2, 4));

    // Status filter (comma-separated) and query validation.
    await cobo('PUT', `/payments/refunds/${ids[0]}/cancel`);
    const failed = await cobo('GET', '/payments/refunds', { query: `merchant_id=${merchantId}&statuses=Failed,Completed` });
    expect(failed.json.data.map((r: any) => r.refund_id)).toEqual([ids[0]]);
    for (const bad of ['limit=0', 'limit=51', 'limit=x', 'statuses=Nope', 'after=zzz', 'before=a&after=b']) {
      expectError(await cobo('GET', '/payments/refunds', { query: bad }), 400, 2006);
    }
  });
});

describe('Cobo emulator: faults', () => {
  it('validates, merges and resets fault settings', async () => {
    expect((await control('DELETE', '/sandbox/cobo/faults')).body).toMatchObject({
      nonceWindowMs: 300_000,
      processAfterMs: 300,
      settleAfterMs: 1_000,
      partialCompletedRatio: 0.5,
      duplicateRequestId: 'reject',
      webhookUrl: null,
      insufficientBalance: false,
    });
    for (const bad of [
      { nope: 1 },
      { errorRate: 1.5 },
      { latencyMs: -1 },
      { partialCompletedRatio: 1 },
      { duplicateRequestId: 'x' },
      { webhookUrl: 'ftp://x' },
      { malformedResponseRate: -1 },
      { rateLimitRate: 2 },
      { rateLimitRetryAfterSeconds: '1' },
      { webhookJitterMs: 3_600_001 },
      [1],
    ]) {
      const res = await control('PUT', '/sandbox/cobo/faults', bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(typeof res.body.error).toBe('string');
    }
    await control('PUT', '/sandbox/cobo/faults', { latencyMs: 5, webhookUrl: 'http://127.0.0.1:1/x' });
    const merged = await control('PUT', '/sandbox/cobo/faults', { failRate: 0.25, webhookUrl: null });
    expect(merged.body).toMatchObject({ latencyMs: 5, failRate: 0.25, webhookUrl: null, settleAfterMs: 1_000 });
    expect((await control('GET', '/sandbox/cobo/faults', undefined, b)).body).toEqual(merged.body);
  });

  it('answers without a signature, or with a wrong one, when told to', async () => {
    await control('PUT', '/sandbox/cobo/faults', { unsignedResponseRate: 1 });
    const unsigned = await cobo('GET', '/payments/refunds', { allowBadSignature: true });
    expect(unsigned.status).toBe(200);
    expect(unsigned.headers['biz-resp-signature']).toBeUndefined();
    expect(unsigned.headers['biz-timestamp']).toBeUndefined();
    await control('PUT', '/sandbox/cobo/faults', { unsignedResponseRate: 0, badSignatureRate: 1 });
    const forged = await cobo('GET', '/payments/refunds', { allowBadSignature: true });
    expect(forged.status).toBe(200);
    expect(forged.headers['biz-resp-signature']).toMatch(/^[0-9a-f]{128}$/);
    expect(forged.signed).toBe(false);
  });

  it('answers 429 (2026) with Retry-After and without a signature at rateLimitRate, before doing anything', async () => {
    const orderId = await payment('10');
    await control('DELETE', '/sandbox/cobo/faults/injected');
    await control('PUT', '/sandbox/cobo/faults', { rateLimitRate: 1, rateLimitRetryAfterSeconds: 2 });
    const res = await cobo('POST', '/payments/refunds', { body: refundBody(orderId, '1'), allowBadSignature: true });
    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('2');
    expect(res.json.error_code).toBe(2026);
    // Like the gateway answers Cobo's Python SDK accepts unsigned (providers.md §2.4).
    expect(res.headers['biz-resp-signature']).toBeUndefined();
    expect(await records(orderId)).toEqual([]);
    await waitFor('counted', async () => (await control('GET', '/sandbox/cobo/faults/injected', undefined, b)).body.rate_limited === 1);
  });

  it('commits, then spoils the answer (cut short, cut off, not JSON); a spoiled body never verifies as JSON', async () => {
    const orderId = await payment('10');
    await control('DELETE', '/sandbox/cobo/faults/injected');
    await control('PUT', '/sandbox/cobo/faults', { malformedResponseRate: 1 });
    const mode = async (call: Promise<CoboAnswer>): Promise<string> => {
      try {
        const res = await call;
        expect(res.json).toBeUndefined();
        return res.text.startsWith('<html>') ? 'not_json' : 'truncated';
      } catch (err) {
        expect((err as Error).message).toMatch(/aborted|ECONNRESET|socket hang up/);
        return 'cut_off';
      }
    };
    const body = refundBody(orderId, '4');
    await mode(cobo('POST', '/payments/refunds', { body, allowBadSignature: true }));
    expect(await records(orderId)).toEqual([expect.objectContaining({ request_id: body.request_id, amount: '4' })]);
    const seen = new Set<string>();
    let calls = 1;
    for (; calls < 60 && seen.size < 3; calls++) seen.add(await mode(cobo('GET', '/payments/refunds', { allowBadSignature: true })));
    expect([...seen].sort()).toEqual(['cut_off', 'not_json', 'truncated']);
    await waitFor('counted', async () => {
      const n = (await control('GET', '/sandbox/cobo/faults/injected')).body;
      return (n.malformed_truncated ?? 0) + (n.malformed_cut_off ?? 0) + (n.malformed_not_json ?? 0) === calls;
    });
  });

  it('answers 500 (signed 2000) before doing anything at the error rate', async () => {
    const orderId = await payment('10');
    await control('PUT', '/sandbox/cobo/faults', { errorRate: 1 });
    expectError(await createRefund(refundBody(orderId, '1')), 500, 2000);
    expect(await records(orderId)).toEqual([]);
  });

  it('commits, then drops the connection unanswered (timeout after commit)', async () => {
    const orderId = await payment('10');
    const body = refundBody(orderId, '4');
    await control('PUT', '/sandbox/cobo/faults', { timeoutAfterCommitRate: 1 });
    await expect(createRefund(body)).rejects.toThrow(/socket hang up/);
    expect(await records(orderId)).toEqual([expect.objectContaining({ request_id: body.request_id, amount: '4' })]);
    await control('PUT', '/sandbox/cobo/faults', { timeoutAfterCommitRate: 0 });
    // Recovery path: the request_id lookup finds it; a resend is refused as a duplicate.
    const found = await cobo('GET', '/payments/refunds', { query: `request_id=${encodeURIComponent(body.request_id)}` });
    expect(found.json.data).toHaveLength(1);
    expectError(await createRefund(body), 400, 2040);
  });
});

describe('Cobo emulator: webhooks', () => {
  it('delivers signed status webhooks, retrying after a 500 with the same event and timestamp', async () => {
    const path = `/hook/${rid('ok')}`;
    failFirstOfEach.add(path);
    await control('PUT', '/sandbox/cobo/faults', { webhookUrl: `${receiverUrl}${path}` });
    const orderId = await payment('20');
    const res = await createRefund(refundBody(orderId, '5'));
    const id = res.json.refund_id;
    await until(id, ['Completed']);

    // Processing and Completed, each refused once and then retried: four deliveries.
    const received = await waitFor('four deliveries', async () => {
      const mine = hooks.filter((h) => h.path === path && h.json.data.refund_id === id);
      return mine.length >= 4 && mine;
    });
    for (const hook of received) {
      const ts = String(hook.headers['biz-timestamp']);
      const sig = String(hook.headers['biz-resp-signature']);
      expect(verifyCoboResponse(creds.coboPublicKey, hook.raw, ts, sig)).toBe(true);
      expect(verifyCoboResponse(creds.coboPublicKey, Buffer.concat([hook.raw, Buffer.from(' ')]), ts, sig)).toBe(false);
      expect(hook.json).toMatchObject({ type: 'payment.refund.status.updated', url: `${receiverUrl}${path}` });
      expect(hook.json.data).toMatchObject({ data_type: 'PaymentRefund', refund_id: id, order_id: orderId, amount: '5' });
      expect(hook.json.created_timestamp).toBeGreaterThan(1e12); // milliseconds
    }
    for (const status of ['Processing', 'Completed']) {
      const attempts = received.filter((h) => h.json.data.status === status);
      expect(attempts, status).toHaveLength(2);
      expect(attempts[1]!.json.event_id).toBe(attempts[0]!.json.event_id);
      expect(attempts[1]!.json.created_timestamp).toBe(attempts[0]!.json.created_timestamp);
      expect(attempts.map((h) => h.json.retries_left)).toEqual([6, 5]);
    }
    const completed = received.find((h) => h.json.data.status === 'Completed')!;
    expect(completed.json.data.transactions[0].status).toBe('Completed');

    const log = await waitFor('delivered', async () => {
      const w = (await control('GET', `/sandbox/cobo/webhooks?refund_id=${id}`)).body.data;
      return w.length === 2 && w.every((x: any) => x.status === 'DELIVERED') && w;
    });
    expect(log.map((w: any) => [w.refund_status, w.attempts])).toEqual([
      ['Processing', 2],
      ['Completed', 2],
    ]);
    // Two serving processes, one delivery each: nothing more arrives.
    await new Promise((r) => setTimeout(r, 500));
    expect(hooks.filter((h) => h.path === path && h.json.data.refund_id === id)).toHaveLength(4);
  });

  it('delays each webhook copy by webhookDelayMs plus its own 0..webhookJitterMs, so statuses can overtake each other', async () => {
    const path = `/hook/${rid('jitter')}`;
    await control('PUT', '/sandbox/cobo/faults', {
      webhookUrl: `${receiverUrl}${path}`,
      webhookDelayMs: 60_000,
      webhookJitterMs: 5_000,
      duplicateWebhookRate: 1,
      processAfterMs: 0,
      settleAfterMs: 100,
    });
    const orderId = await payment('20');
    const created = await createRefund(refundBody(orderId, '3'));
    await until(created.json.refund_id, ['Completed']);
    const db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    try {
      const { rows } = await db.query(
        `SELECT refund_status, extract(epoch FROM next_attempt_at - created_at) * 1000 AS ms FROM sandbox.cobo_webhooks
          WHERE refund_id = $1 AND status = 'PENDING'`,
        [created.json.refund_id],
      );
      // Every status change (at least two here), two copies each, each with its own delay.
      expect(rows.length).toBeGreaterThanOrEqual(4);
      expect(rows.length % 2).toBe(0);
      const delays = rows.map((r) => Number(r.ms));
      for (const ms of delays) expect(ms >= 60_000 && ms <= 65_000, String(ms)).toBe(true);
      expect(new Set(delays).size).toBeGreaterThan(1);
    } finally {
      await db.end();
    }
  });

  it('applies the drop and duplicate faults', async () => {
    const dupPath = `/hook/${rid('dup')}`;
    await control('PUT', '/sandbox/cobo/faults', { webhookUrl: `${receiverUrl}${dupPath}`, duplicateWebhookRate: 1 });
    const orderId = await payment('20');
    const cancel = await createRefund(refundBody(orderId, '3', { to_address: undefined }));
    await cobo('PUT', `/payments/refunds/${cancel.json.refund_id}/cancel`);
    const twice = await waitFor('duplicated webhook', async () => {
      const mine = hooks.filter((h) => h.path === dupPath && h.json.data.refund_id === cancel.json.refund_id);
      return mine.length === 2 && mine;
    });
    expect(twice.map((h) => h.json.data.status)).toEqual(['Failed', 'Failed']);
    expect(twice[0]!.json.event_id).toBe(twice[1]!.json.event_id);

    const dropPath = `/hook/${rid('drop')}`;
    await control('PUT', '/sandbox/cobo/faults', { webhookUrl: `${receiverUrl}${dropPath}`, duplicateWebhookRate: 0, dropWebhookRate: 1 });
    const dropped = await createRefund(refundBody(orderId, '3', { to_address: undefined }));
    await cobo('PUT', `/payments/refunds/${dropped.json.refund_id}/cancel`);
    const log = (await control('GET', `/sandbox/cobo/webhooks?refund_id=${dropped.json.refund_id}`)).body.data;
    expect(log.map((w: any) => w.status)).toEqual(['DROPPED']);
    await new Promise((r) => setTimeout(r, 400));
    expect(hooks.filter((h) => h.path === dropPath && h.json.data.refund_id === dropped.json.refund_id)).toHaveLength(0);
  });
});

describe('Cobo emulator: restarts', () => {
  it('keeps keys and records across a process restart', async () => {
    const orderId = await payment('10');
    const res = await createRefund(refundBody(orderId, '2'));
    await b.app.close();
    b = await boot(dbUrl);
    expect(await b.app.get(SandboxCredentials).cobo()).toEqual(creds);
    expect((await getRefund(res.json.refund_id, b)).json).toMatchObject({ refund_id: res.json.refund_id, amount: '2' });
  });
});
