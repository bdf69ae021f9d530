import 'reflect-metadata';
import { createHmac, createPublicKey, verify as verifySignature } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamicModule, Global, INestApplication, Inject, Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { configureBodiesAndErrors, createHttpAdapter } from '../src/app.js';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { ConfigModule } from '../src/config/config.module.js';
import { DatabaseModule } from '../src/database/database.module.js';
import { LeanSandboxCredentials } from '../src/sandbox/lean/lean.credentials.js';
import { LeanSandboxModule } from '../src/sandbox/lean/lean.module.js';
import { LeanSandboxPayments } from '../src/sandbox/lean/lean.payments.js';
import { isValidIban } from '../src/sandbox/lean/lean.rules.js';
import { SandboxBadRequest } from '../src/sandbox/sandbox-http.js';
import { SandboxPaymentEmulator } from '../src/sandbox/sandbox-payment-emulator.js';
import { createTestDatabase, dropTestDatabase } from './support/database.js';

// ---------------------------------------------------------------------------------------
// Harness: the emulator in a bare Nest app (no product code), two "processes" on one database.
// Process a imports LeanSandboxModule directly; process b goes through a global wrapper the
// way SandboxModule is meant to (import + re-export + the payment-emulator list).

const EMULATORS = Symbol('EMULATORS');

@Global()
@Module({})
class WrapperLikeSandboxModule {
  static register(): DynamicModule {
    return {
      module: WrapperLikeSandboxModule,
      imports: [LeanSandboxModule.register({ serveHttp: true })],
      providers: [
        {
          provide: EMULATORS,
          useFactory: (lean: LeanSandboxPayments): SandboxPaymentEmulator[] => [lean],
          inject: [LeanSandboxPayments],
        },
      ],
      exports: [LeanSandboxModule, EMULATORS],
    };
  }
}

/** Stands for a product module that only relies on the global sandbox exports. */
@Injectable()
class CredentialsConsumer {
  constructor(
    readonly credentials: LeanSandboxCredentials,
    @Inject(EMULATORS) readonly emulators: SandboxPaymentEmulator[],
  ) {}
}
@Module({ providers: [CredentialsConsumer] })
class ConsumerModule {}

interface Booted {
  app: INestApplication;
  base: string;
}

async function boot(databaseUrl: string, wrapped = false): Promise<Booted> {
  const cfg = loadConfig({
    ...process.env,
    DATABASE_URL: databaseUrl,
    SANDBOX: 'true',
    MIGRATIONS_RUN: 'false',
    PORT: '0',
    DB_POOL_SIZE: '10',
  });
  const sandbox = wrapped ? [WrapperLikeSandboxModule.register(), ConsumerModule] : [LeanSandboxModule.register({ serveHttp: true })];
  @Module({ imports: [ConfigModule.forRoot(cfg), DatabaseModule, ...sandbox] })
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
  headers: http.IncomingHttpHeaders;
  json: any;
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
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            /* asserted by the caller */
          }
          resolve({ status: res.statusCode!, text, headers: res.headers, json });
        });
      },
    );
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('client timeout')));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 8_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let dbUrl: string;
let a: Booted;
let b: Booted;
let creds: { clientId: string; clientSecret: string; webhookSecret: string };
let token: string;

/** JSON control endpoints of the sandbox (not Lean's protocol). */
async function control(method: string, path: string, body?: unknown, via: Booted = a) {
  return request(
    via.base,
    method,
    `/sandbox/lean${path}`,
    body === undefined ? undefined : JSON.stringify(body),
    body === undefined ? {} : { 'content-type': 'application/json' },
  );
}

async function faults(patch: Record<string, unknown>): Promise<void> {
  const res = await control('PUT', '/faults', patch);
  expect(res.status, res.text).toBe(200);
}

function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString();
}

async function tokenCall(fields: Record<string, string>, headers: Record<string, string> = {}, via: Booted = a) {
  return request(via.base, 'POST', '/sandbox/lean-auth/oauth2/token', form(fields), {
    'content-type': 'application/x-www-form-urlencoded',
    ...headers,
  });
}

async function newToken(scope = 'api', via: Booted = a): Promise<string> {
  const res = await tokenCall(
    { client_id: creds.clientId, client_secret: creds.clientSecret, grant_type: 'client_credentials', scope },
    {},
    via,
  );
  expect(res.status, res.text).toBe(200);
  return res.json.access_token as string;
}

/** A Lean API call with a bearer token; `body` is sent as given (a string) or JSON-encoded. */
async function api(
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string | null; via?: Booted; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  const bearer = opts.token === undefined ? token : opts.token;
  if (bearer !== null) headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return request((opts.via ?? a).base, method, `/sandbox/lean${path}`, text, { ...headers, ...opts.headers });
}

function expectLeanError(res: Answer, httpStatus: number, status: string): void {
  expect(res.status, res.text).toBe(httpStatus);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(res.json).toEqual({ status, message: expect.any(String), timestamp: expect.any(String) });
  expect(Number.isNaN(Date.parse(res.json.timestamp))).toBe(false);
}

async function payment(amount: string, currency = 'AED', status?: string): Promise<string> {
  const p = await a.app.get(LeanSandboxPayments).createPayment({ amount, currency, status });
  return p.paymentId;
}

let seq = 0;
const ref = (label: string) => `${label}-${Date.now()}-${seq++}`;

interface Item {
  payment_id: string;
  amount: number | string;
  currency?: string;
  reason_code?: string;
  description?: string;
  external_reference?: string;
}

function item(paymentId: string, amount: string, extra: Partial<Item> = {}): string {
  // Amount spliced in as raw JSON number text, so "10.10" goes over the wire exactly.
  const rest = JSON.stringify({ currency: 'AED', reason_code: 'CUSTOMER_REQUEST', external_reference: ref('ext'), ...extra });
  return `{"payment_id":${JSON.stringify(paymentId)},"amount":${amount},${rest.slice(1)}`;
}

const create = (items: string[], via: Booted = a) => api('POST', '/payouts/refunds', `[${items.join(',')}]`, { via });
const processRefunds = (decisions: Array<{ refund_id: string; status: string }>, via: Booted = a) =>
  api('PUT', '/payouts/refunds', decisions, { via });

async function records(paymentId: string): Promise<any[]> {
  const res = await control('GET', `/refunds?payment_id=${paymentId}`);
  expect(res.status, res.text).toBe(200);
  return res.json.data;
}

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
  dbUrl = await createTestDatabase('sandbox_lean');
  // Two processes starting at once exercise the schema creation lock.
  [a, b] = await Promise.all([boot(dbUrl), boot(dbUrl, true)]);
  creds = await a.app.get(LeanSandboxCredentials).lean();
  token = await newToken();

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
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
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
  expect((await control('DELETE', '/faults')).status).toBe(200);
  // Fast settlement keeps the file short; the default (1 s) is asserted in the faults test.
  await faults({ settleAfterMs: 100 });
});

// ---------------------------------------------------------------------------------------

describe('Lean emulator: credentials, wiring and payments', () => {
  it('shares one generated credential set per database, also through a re-exporting global module', async () => {
    expect(creds.clientId).toMatch(/^[0-9a-f-]{36}$/);
    expect(creds.clientSecret).toMatch(/^[0-9a-f]{64}$/);
    expect(creds.webhookSecret).toMatch(/^[0-9a-f]{64}$/);
    const consumer = b.app.get(CredentialsConsumer);
    expect(await consumer.credentials.lean()).toEqual(creds);
    expect(consumer.emulators.map((e) => e.provider)).toEqual(['lean']);
  });

  it('seeds payments and serves GET /payments/v1/{id} with an exact JSON number amount', async () => {
    const seeded = await b.app.get(LeanSandboxPayments).createPayment({ amount: '100.50', currency: 'AED' });
    expect(seeded).toMatchObject({ provider: 'lean', amount: '100.50', currency: 'AED', status: 'ACCEPTED_BY_BANK' });
    const res = await api('GET', `/payments/v1/${seeded.paymentId}`);
    expect(res.status, res.text).toBe(200);
    expect(res.text).toContain('"amount":100.5,');
    expect(res.json).toEqual({
      id: seeded.paymentId,
      customer_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      intent_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      status: 'ACCEPTED_BY_BANK',
      amount: 100.5,
      currency: 'AED',
      payment_destination_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      reconciliation: { status: 'RECONCILED' },
    });
    const unreconciled = await payment('5', 'SAR', 'UNRECONCILED');
    expect((await api('GET', `/payments/v1/${unreconciled}`)).json).toMatchObject({
      status: 'ACCEPTED_BY_BANK',
      currency: 'SAR',
      reconciliation: { status: 'OUTSTANDING' },
    });
    const pending = await payment('5', 'AED', 'PENDING_WITH_BANK');
    expect((await api('GET', `/payments/v1/${pending}`)).json.status).toBe('PENDING_WITH_BANK');
    const listed = await a.app.get(LeanSandboxPayments).listPayments(10);
    expect(listed.map((p) => [p.paymentId, p.status])).toEqual(
      expect.arrayContaining([
        [unreconciled, 'UNRECONCILED'],
        [pending, 'PENDING_WITH_BANK'],
      ]),
    );
    const inspected = await control('GET', `/payments/${unreconciled}`);
    expect(isValidIban(inspected.json.beneficiary.iban)).toBe(true);
    expect(inspected.json.beneficiary.iban).toMatch(/^SA\d{22}$/);

    expectLeanError(await api('GET', '/payments/v1/00000000-0000-4000-8000-000000000000'), 404, 'INVALID_URL');
    expectLeanError(await api('GET', '/payments/v1/not-a-uuid'), 400, 'INVALID_PARAMETERS');
    const payments = a.app.get(LeanSandboxPayments);
    for (const bad of [
      { amount: '1', currency: 'USD' },
      { amount: '1.001', currency: 'AED' },
      { amount: '1', currency: 'AED', status: 'REFUNDED' },
    ]) {
      await expect(payments.createPayment(bad), JSON.stringify(bad)).rejects.toBeInstanceOf(SandboxBadRequest);
    }
  });
});

describe('Lean emulator: OAuth2 token endpoint', () => {
  const good = () => ({ client_id: creds.clientId, client_secret: creds.clientSecret, grant_type: 'client_credentials', scope: 'api' });

  it('issues an RS256 JWT for the registered client with Lean scopes', async () => {
    const res = await tokenCall(good());
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ access_token: expect.any(String), scope: 'api', token_type: 'Bearer', expires_in: 3599 });
    const [h, p, s] = res.json.access_token.split('.');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString());
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    expect(header).toEqual({ kid: expect.any(String), alg: 'RS256' });
    expect(claims).toMatchObject({
      sub: creds.clientId,
      iss: expect.stringMatching(/\/sandbox\/lean-auth$/),
      aud: expect.stringMatching(/\/sandbox\/lean$/),
      applications: [{ id: creds.clientId }],
    });
    expect(claims.exp - claims.iat).toBe(3599);
    expect(claims.scope).toEqual(expect.arrayContaining(['payout.read', 'payout.write', 'payment.read', 'reconciliation.read']));
    const app = await a.app.get(LeanSandboxCredentials).leanApplication();
    expect(verifySignature('RSA-SHA256', Buffer.from(`${h}.${p}`), createPublicKey(app.publicKeyPem), Buffer.from(s, 'base64url'))).toBe(
      true,
    );
  });

  it('accepts only forms, the registered client, client_credentials and scope=api|customer.<id>', async () => {
    const asJson = await request(a.base, 'POST', '/sandbox/lean-auth/oauth2/token', JSON.stringify(good()), {
      'content-type': 'application/json',
    });
    expectLeanError(asJson, 400, 'INVALID_PARAMETERS');
    expectLeanError(await tokenCall({ ...good(), client_secret: 'wrong' }), 401, 'UNAUTHORIZED');
    expectLeanError(await tokenCall({ ...good(), client_id: '00000000-0000-4000-8000-000000000000' }), 401, 'UNAUTHORIZED');
    const { scope: _scope, ...noScope } = good();
    expectLeanError(await tokenCall(noScope), 400, 'MISSING_PARAMETERS');
    expectLeanError(await tokenCall({ ...good(), scope: 'payouts' }), 400, 'INVALID_PARAMETERS');
    expectLeanError(await tokenCall({ ...good(), grant_type: 'password' }), 400, 'INVALID_PARAMETERS');
    const customer = await tokenCall({ ...good(), scope: 'customer.3fa85f64-5717-4562-b3fc-2c963f66afa6' });
    expect(customer.json.scope).toBe('customer.3fa85f64-5717-4562-b3fc-2c963f66afa6');
    // Unknown paths and methods answer in Lean's format too.
    expectLeanError(await request(a.base, 'GET', '/sandbox/lean-auth/oauth2/token'), 405, 'INVALID_HTTP_METHOD');
    expectLeanError(await request(a.base, 'POST', '/sandbox/lean-auth/oauth2/nope'), 404, 'INVALID_URL');
  });
});

describe('Lean emulator: bearer tokens on the API', () => {
  it('rejects missing, malformed, forged and expired tokens with 401, wrong scope with 403', async () => {
    expectLeanError(await api('GET', '/payouts/refunds', undefined, { token: null }), 401, 'UNAUTHORIZED');
    expectLeanError(await api('GET', '/payouts/refunds', undefined, { token: 'garbage' }), 401, 'UNAUTHORIZED');
    const [h, p, s] = token.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 10 })).toString('base64url')}.${s}`;
    expectLeanError(await api('GET', '/payouts/refunds', undefined, { token: forged }), 401, 'UNAUTHORIZED');
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`;
    expectLeanError(await api('GET', '/payouts/refunds', undefined, { token: none }), 401, 'UNAUTHORIZED');

    // A Link SDK (customer) token has payment.read but no payout.* scope.
    const customer = await newToken('customer.3fa85f64-5717-4562-b3fc-2c963f66afa6');
    expectLeanError(await api('GET', '/payouts/refunds', undefined, { token: customer }), 403, 'INSUFFICIENT_ACCESS_LEVEL');
    expectLeanError(await api('POST', '/payouts/refunds', '[]', { token: customer }), 403, 'INSUFFICIENT_ACCESS_LEVEL');
    const paymentId = await payment('3');
    expect((await api('GET', `/payments/v1/${paymentId}`, undefined, { token: customer })).status).toBe(200);

    await faults({ tokenTtlSeconds: 1 });
    const issued = await tokenCall({ client_id: creds.clientId, client_secret: creds.clientSecret, grant_type: 'client_credentials', scope: 'api' });
    expect(issued.json.expires_in).toBe(1);
    const exp = JSON.parse(Buffer.from(issued.json.access_token.split('.')[1], 'base64url').toString()).exp as number;
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 50));
    const expired = await api('GET', '/payouts/refunds', undefined, { token: issued.json.access_token });
    expectLeanError(expired, 401, 'UNAUTHORIZED');
    expect(expired.json.message).toMatch(/expired/i);
  });

  it('counts issued tokens, so a client reusing one token shows exactly one issuance', async () => {
    const before = (await control('GET', '/tokens/stats')).json.issued as number;
    const mine = await newToken('api', b);
    for (let i = 0; i < 5; i++) expect((await api('GET', '/payouts/refunds?size=1', undefined, { token: mine, via: i % 2 ? a : b })).status).toBe(200);
    expect((await control('GET', '/tokens/stats', undefined, b)).json).toMatchObject({ issued: before + 1 });
  });
});

describe('Lean emulator: creating refunds', () => {
  it('creates from an array, echoing Lean\'s create shape, reading the amount exactly', async () => {
    const paymentId = await payment('100');
    const ext = ref('first');
    const res = await create([item(paymentId, '10.10', { external_reference: ext, description: 'Order 123' })]);
    expect(res.status, res.text).toBe(201);
    expect(res.text).toContain('"amount":10.1,');
    expect(res.json).toEqual([
      {
        refund_id: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/),
        payment_id: paymentId,
        status: 'CREATED',
        amount: 10.1,
        currency: 'AED',
        reason_code: 'CUSTOMER_REQUEST',
        description: 'Order 123',
        external_reference: ext,
        beneficiary: { name: expect.any(String), iban: expect.stringMatching(/^AE\d{21}$/), account_id: expect.any(String), city: expect.any(String) },
      },
    ]);
    expect(await records(paymentId)).toEqual([expect.objectContaining({ refund_id: res.json[0].refund_id, amount: '10.10', status: 'CREATED' })]);
  });

  it('refuses non-arrays and bad items with 400, creating nothing', async () => {
    const paymentId = await payment('50');
    const bad = async (body: string, status = 'INVALID_PARAMETERS') => {
      const res = await api('POST', '/payouts/refunds', body);
      expectLeanError(res, 400, status);
      return res;
    };
    await bad(item(paymentId, '1')); // an object, not an array
    await bad('[]');
    await bad('[1]');
    await bad(`[${item(paymentId, '"5"')}]`);
    await bad(`[${item(paymentId, '0')}]`);
    await bad(`[${item(paymentId, '-1')}]`);
    await bad(`[${item(paymentId, '1.005')}]`);
    await bad(`[${item(paymentId, '1', { reason_code: 'BECAUSE' })}]`);
    await bad(`[{"payment_id":"${paymentId}","amount":1,"reason_code":"CUSTOMER_REQUEST"}]`, 'MISSING_PARAMETERS');
    await bad(`[${item('00000000-0000-4000-8000-000000000000', '1')}]`);
    // A batch with one bad item fails whole (partialBatch: false).
    await bad(`[${item(paymentId, '1')},${item(paymentId, '1', { currency: 'SAR' })}]`);
    // Malformed JSON: Lean's envelope (after authentication), not problem+json.
    await bad('[{"payment_id":');
    expectLeanError(await api('POST', '/payouts/refunds', '[{"payment_id":', { token: null }), 401, 'UNAUTHORIZED');
    const asText = await api('POST', '/payouts/refunds', `[${item(paymentId, '1')}]`, { headers: { 'content-type': 'text/plain' } });
    expectLeanError(asText, 400, 'INVALID_PARAMETERS');
    expect(await records(paymentId)).toEqual([]);
  });

  it('refuses unreconciled payments and currency mismatches', async () => {
    const unreconciled = await payment('20', 'AED', 'UNRECONCILED');
    const refused = await create([item(unreconciled, '5')]);
    expectLeanError(refused, 400, 'INVALID_PARAMETERS');
    expect(refused.json.message).toMatch(/not reconciled/);
    expectLeanError(await create([item(await payment('20', 'AED', 'PENDING_WITH_BANK'), '5')]), 400, 'INVALID_PARAMETERS');
    expect((await control('POST', `/payments/${unreconciled}/reconcile`, {})).json.reconciliation).toEqual({ status: 'RECONCILED' });
    expect((await create([item(unreconciled, '5')])).status).toBe(201);

    const sar = await payment('20', 'SAR');
    const mismatch = await create([item(sar, '5', { currency: 'AED' })]);
    expectLeanError(mismatch, 400, 'INVALID_PARAMETERS');
    expect(mismatch.json.message).toMatch(/currency/);
    expect((await create([item(sar, '5', { currency: 'SAR' })])).status).toBe(201);
  });

  it('never refunds more than the payment under concurrency, across processes', async () => {
    const paymentId = await payment('100');
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => create([item(paymentId, '30')], i % 2 ? b : a)));
    expect(answers.filter((r) => r.status === 201)).toHaveLength(3);
    for (const r of answers.filter((r) => r.status !== 201)) expectLeanError(r, 400, 'INVALID_PARAMETERS');
    const held = await records(paymentId);
    expect(held.reduce((sum, r) => sum + Number(r.amount), 0)).toBe(90);
    expectLeanError(await create([item(paymentId, '10.01')]), 400, 'INVALID_PARAMETERS');
    // Items of one batch count against each other.
    expectLeanError(await create([item(paymentId, '6'), item(paymentId, '6')]), 400, 'INVALID_PARAMETERS');
    expect((await create([item(paymentId, '10')])).status).toBe(201);
    expect((await control('GET', `/payments/${paymentId}`)).json.reserved_amount).toBe('100.00');
  });

  it('has no idempotency: the same external_reference twice makes two refunds', async () => {
    const paymentId = await payment('50');
    const ext = ref('same');
    const first = await create([item(paymentId, '5', { external_reference: ext })]);
    const second = await create([item(paymentId, '5', { external_reference: ext })], b);
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(first.json[0].refund_id).not.toBe(second.json[0].refund_id);
    const held = await records(paymentId);
    expect(held.map((r) => r.external_reference)).toEqual([ext, ext]);
    const listed = await api('GET', `/payouts/refunds?payment_id=${paymentId}`);
    expect(listed.json.content).toHaveLength(2);
  });

  it('creates the good items of a bad batch when partialBatch is on', async () => {
    const paymentId = await payment('10');
    await faults({ partialBatch: true });
    const res = await create([item(paymentId, '4'), item(paymentId, '7'), item(paymentId, '1', { reason_code: 'NOPE' }), item(paymentId, '6')]);
    expect(res.status, res.text).toBe(201);
    expect(res.json.map((r: any) => r.status)).toEqual(['CREATED', 'INVALID_PARAMETERS', 'INVALID_PARAMETERS', 'CREATED']);
    expect(res.json[1]).toMatchObject({ index: 1, message: expect.stringMatching(/refundable/) });
    expect((await records(paymentId)).map((r) => r.amount)).toEqual(['4.00', '6.00']);
    expectLeanError(await create([item(paymentId, '1')]), 400, 'INVALID_PARAMETERS');
  });
});

describe('Lean emulator: approval, rejection and settlement', () => {
  it('approves a CREATED refund, which then reaches COMPLETED; the list shows the full object', async () => {
    const paymentId = await payment('30');
    const created = await create([item(paymentId, '12.5', { external_reference: 'ours-rf-1' })]);
    const refundId = created.json[0].refund_id;
    const approved = await processRefunds([{ refund_id: refundId, status: 'APPROVED' }], b);
    expect(approved.status, approved.text).toBe(200);
    expect(approved.json).toEqual([{ refund_id: refundId, status: 'APPROVED' }]);

    const done = await waitFor('COMPLETED', async () => {
      const res = await api('GET', `/payouts/refunds?payment_id=${paymentId}`);
      return res.json.content[0].status === 'COMPLETED' && res;
    });
    expect(done.json).toEqual({
      content: [
        {
          refund_id: refundId,
          deposit_amount: 12.5,
          deposit_currency: 'AED',
          payment_id: paymentId,
          status: 'COMPLETED',
          amount: 12.5,
          currency: 'AED',
          reason_code: 'CUSTOMER_REQUEST',
          description: null,
          external_reference: 'ours-rf-1',
          beneficiary: created.json[0].beneficiary,
          created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
          created_by: 'edge-gateway',
          actioned_by: 'edge-gateway',
          refund_intent_id: null,
        },
      ],
      page: { number: 0, size: 50, total_elements: 1, total_pages: 1, sort: null },
    });

    // Only CREATED refunds can move.
    expectLeanError(await processRefunds([{ refund_id: refundId, status: 'APPROVED' }]), 400, 'INVALID_PARAMETERS');
    expectLeanError(await processRefunds([{ refund_id: refundId, status: 'REJECTED' }]), 400, 'INVALID_PARAMETERS');
  });

  it('rejects a refund and frees its amount; validates PUT bodies', async () => {
    const paymentId = await payment('20');
    const created = await create([item(paymentId, '20')]);
    const refundId = created.json[0].refund_id;
    expectLeanError(await create([item(paymentId, '1')]), 400, 'INVALID_PARAMETERS');
    const rejected = await processRefunds([{ refund_id: refundId, status: 'REJECTED' }]);
    expect(rejected.json).toEqual([{ refund_id: refundId, status: 'REJECTED' }]);
    expect((await records(paymentId))[0]).toMatchObject({ status: 'REJECTED', actioned_by: 'edge-gateway' });
    expect((await create([item(paymentId, '20')])).status).toBe(201);
    expectLeanError(await processRefunds([{ refund_id: refundId, status: 'APPROVED' }]), 400, 'INVALID_PARAMETERS');

    expectLeanError(await api('PUT', '/payouts/refunds', { refund_id: refundId, status: 'APPROVED' }), 400, 'INVALID_PARAMETERS');
    expectLeanError(await processRefunds([{ refund_id: refundId, status: 'COMPLETED' }]), 400, 'INVALID_PARAMETERS');
    expectLeanError(await processRefunds([{ refund_id: '00000000-0000-4000-8000-000000000000', status: 'APPROVED' }]), 400, 'INVALID_PARAMETERS');
  });

  it('fails approved refunds at failRate, or when told, releasing their amount', async () => {
    const paymentId = await payment('10');
    await faults({ failRate: 1 });
    const first = (await create([item(paymentId, '10')])).json[0].refund_id;
    await processRefunds([{ refund_id: first, status: 'APPROVED' }]);
    await waitFor('FAILED', async () => (await records(paymentId))[0].status === 'FAILED');
    expect((await control('GET', `/payments/${paymentId}`)).json.reserved_amount).toBe('0.00');

    await faults({ failRate: 0, settleAfterMs: 3_600_000, successStatus: 'PAID' });
    const second = (await create([item(paymentId, '10')])).json[0].refund_id;
    expect((await control('POST', `/refunds/${second}/settle`, { status: 'COMPLETED' })).status).toBe(409);
    await processRefunds([{ refund_id: second, status: 'APPROVED' }]);
    expect((await records(paymentId))[1].status).toBe('APPROVED');
    expect((await control('POST', `/refunds/${second}/settle`, { status: 'BOGUS' })).status).toBe(400);
    const settled = await control('POST', `/refunds/${second}/settle`, { status: 'COMPLETED' });
    expect(settled.json).toMatchObject({ refund_id: second, status: 'PAID' });
    const third = (await create([item(paymentId, '0.01')])).status;
    expect(third).toBe(400); // fully refunded

    const other = await payment('5');
    const refund = (await create([item(other, '5')])).json[0].refund_id;
    await processRefunds([{ refund_id: refund, status: 'APPROVED' }]);
    expect((await control('POST', `/refunds/${refund}/settle`, { status: 'FAILED' })).json.status).toBe('FAILED');
    expect((await create([item(other, '5')])).status).toBe(201);
  });
});

describe('Lean emulator: listing', () => {
  it('pages newest first and filters by status (and payment_id)', async () => {
    const paymentId = await payment('100');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await create([item(paymentId, '1', { external_reference: `page-${i}` })])).json[0].refund_id);
    await processRefunds([ids[1]!, ids[3]!].map((refund_id) => ({ refund_id, status: 'APPROVED' })));
    await faults({ settleAfterMs: 3_600_000 });

    const pages = [];
    for (let page = 0; page < 3; page++) {
      const res = await api('GET', `/payouts/refunds?payment_id=${paymentId}&size=2&page=${page}`, undefined, { via: page % 2 ? b : a });
      expect(res.status).toBe(200);
      expect(res.json.page).toEqual({ number: page, size: 2, total_elements: 5, total_pages: 3, sort: null });
      pages.push(...res.json.content.map((r: any) => r.external_reference));
    }
    expect(pages).toEqual(['page-4', 'page-3', 'page-2', 'page-1', 'page-0']);
    const beyond = await api('GET', `/payouts/refunds?payment_id=${paymentId}&size=2&page=3`);
    expect(beyond.json.content).toEqual([]);

    const created = await api('GET', `/payouts/refunds?payment_id=${paymentId}&status=CREATED`);
    expect(created.json.content.map((r: any) => r.external_reference)).toEqual(['page-4', 'page-2', 'page-0']);
    // Without payment_id (Lean's own filters only): status + paging across all refunds.
    const approved = await api('GET', '/payouts/refunds?status=APPROVED&size=100');
    expect(approved.json.content.every((r: any) => r.status === 'APPROVED')).toBe(true);
    expect(approved.json.content.map((r: any) => r.refund_id)).toEqual(expect.arrayContaining([ids[1], ids[3]]));
    expect((await api('GET', '/payouts/refunds')).json.page.size).toBe(50);
    for (const q of ['size=0', 'size=101', 'page=-1', 'page=x', 'status=lower', 'payment_id=nope']) {
      expectLeanError(await api('GET', `/payouts/refunds?${q}`), 400, 'INVALID_PARAMETERS');
    }
  });

  it('serves the reason codes', async () => {
    const res = await api('GET', '/payouts/refunds/reasons');
    expect(res.status).toBe(200);
    expect(res.json.map((r: any) => r.code)).toEqual(['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED']);
    expect(res.json.every((r: any) => typeof r.description === 'string')).toBe(true);
    expectLeanError(await api('DELETE', '/payouts/refunds'), 405, 'INVALID_HTTP_METHOD');
    expectLeanError(await api('GET', '/payouts/nothing'), 404, 'INVALID_URL');
  });
});

describe('Lean emulator: faults', () => {
  it('validates, merges and resets fault settings, shared by every process', async () => {
    expect((await control('DELETE', '/faults')).json).toEqual({
      latencyMs: 0,
      errorRate: 0,
      timeoutAfterCommitRate: 0,
      timeoutAfterCommitDelayMs: 0,
      malformedResponseRate: 0,
      rateLimitRate: 0,
      rateLimitRetryAfterSeconds: 1,
      tokenTtlSeconds: 3599,
      settleAfterMs: 1000,
      failRate: 0,
      successStatus: 'COMPLETED',
      checkerRejectRate: 0,
      partialBatch: false,
      webhookUrl: null,
      eventPrefix: 'refund',
      dropWebhookRate: 0,
      duplicateWebhookRate: 0,
      webhookDelayMs: 0,
      webhookJitterMs: 0,
    });
    for (const bad of [
      { nope: 1 },
      { errorRate: 1.5 },
      { latencyMs: -1 },
      { latencyMs: '5' },
      { tokenTtlSeconds: 0 },
      { successStatus: 'APPROVED' },
      { successStatus: 'done' },
      { partialBatch: 'yes' },
      { webhookUrl: 'ftp://example.com/x' },
      { eventPrefix: 'Refund' },
      { malformedResponseRate: 1.01 },
      { rateLimitRetryAfterSeconds: -1 },
      { webhookJitterMs: 0.5 },
      [1],
    ]) {
      const res = await control('PUT', '/faults', bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(typeof res.json.error).toBe('string');
    }
    await faults({ latencyMs: 5, webhookUrl: 'http://127.0.0.1:9/x' });
    const merged = await control('PUT', '/faults', { failRate: 0.25, webhookUrl: null });
    expect(merged.json).toMatchObject({ latencyMs: 5, failRate: 0.25, webhookUrl: null, settleAfterMs: 1000 });
    expect((await control('GET', '/faults', undefined, b)).json).toEqual(merged.json);
  });

  it('answers 500 and 429 before doing anything', async () => {
    const paymentId = await payment('10');
    await faults({ errorRate: 1 });
    expectLeanError(await create([item(paymentId, '1')]), 500, 'INTERNAL_SERVER_ERROR');
    expectLeanError(await tokenCall({ client_id: 'x', client_secret: 'y', grant_type: 'client_credentials', scope: 'api' }), 500, 'INTERNAL_SERVER_ERROR');
    await faults({ errorRate: 0, rateLimitRate: 1 });
    const limited = await create([item(paymentId, '1')]);
    expectLeanError(limited, 429, 'RATE_LIMIT_EXCEEDED');
    expect(limited.headers['retry-after']).toBe('1');
    await faults({ rateLimitRetryAfterSeconds: 7 });
    expect((await create([item(paymentId, '1')])).headers['retry-after']).toBe('7');
    expect(await records(paymentId)).toEqual([]);
    // Control endpoints are not affected.
    expect((await control('GET', '/faults')).status).toBe(200);
  });

  it('commits, then spoils the answer (cut short, cut off, not JSON); listing finds the refund', async () => {
    const paymentId = await payment('10');
    const ext = ref('spoiled');
    await control('DELETE', '/faults/injected');
    await faults({ malformedResponseRate: 1 });
    const mode = async (call: Promise<Answer>): Promise<string> => {
      try {
        const res = await call;
        expect(res.json).toBeUndefined();
        return res.text.startsWith('<html>') ? 'not_json' : 'truncated';
      } catch (err) {
        expect((err as Error).message).toMatch(/aborted|ECONNRESET|socket hang up/);
        return 'cut_off';
      }
    };
    await mode(create([item(paymentId, '4', { external_reference: ext })]));
    const seen = new Set<string>();
    let calls = 1;
    for (; calls < 60 && seen.size < 3; calls++) seen.add(await mode(api('GET', '/payouts/refunds/reasons')));
    expect([...seen].sort()).toEqual(['cut_off', 'not_json', 'truncated']);
    await faults({ malformedResponseRate: 0 });
    expect(await records(paymentId)).toEqual([expect.objectContaining({ external_reference: ext, amount: '4.00', status: 'CREATED' })]);
    await waitFor('counted', async () => {
      const n = (await control('GET', '/faults/injected')).json;
      return (n.malformed_truncated ?? 0) + (n.malformed_cut_off ?? 0) + (n.malformed_not_json ?? 0) === calls;
    });
  });

  it('delays each webhook copy by webhookDelayMs plus its own 0..webhookJitterMs', async () => {
    const path = `/hook/${ref('jitter')}`;
    await faults({ webhookUrl: `${receiverUrl}${path}`, webhookDelayMs: 60_000, webhookJitterMs: 5_000, duplicateWebhookRate: 1 });
    const paymentId = await payment('20');
    for (let i = 0; i < 3; i++) await create([item(paymentId, '1')]);
    const db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    try {
      const { rows } = await db.query(
        `SELECT extract(epoch FROM next_attempt_at - created_at) * 1000 AS ms FROM sandbox.lean_webhooks
          WHERE payment_id = $1 AND status = 'PENDING'`,
        [paymentId],
      );
      expect(rows).toHaveLength(6);
      const delays = rows.map((r) => Number(r.ms));
      // created_at is clock_timestamp(), a little later than the transaction's now().
      for (const ms of delays) expect(ms >= 59_900 && ms <= 65_000, String(ms)).toBe(true);
      expect(new Set(delays.map((d) => Math.round(d / 50))).size).toBeGreaterThan(1);
    } finally {
      await db.end();
    }
  });

  it('commits, then drops the connection unanswered (timeout after commit); listing finds the refund', async () => {
    const paymentId = await payment('10');
    const ext = ref('dropped');
    await faults({ timeoutAfterCommitRate: 1 });
    await expect(create([item(paymentId, '4', { external_reference: ext })])).rejects.toThrow(/socket hang up/);
    await faults({ timeoutAfterCommitRate: 0 });
    expect(await records(paymentId)).toEqual([expect.objectContaining({ external_reference: ext, amount: '4.00', status: 'CREATED' })]);
    const listed = await api('GET', `/payouts/refunds?payment_id=${paymentId}`);
    expect(listed.json.content.map((r: any) => r.external_reference)).toEqual([ext]);
  });
});

describe('Lean emulator: webhooks', () => {
  function verify(hook: Hook): boolean {
    const expected = `sha512=${createHmac('sha512', creds.webhookSecret).update(hook.body).digest('hex')}`;
    return hook.headers['lean-signature'] === expected;
  }

  it('signs each status change, retries after a 500, and delivers once across processes', async () => {
    const path = `/hook/${ref('ok')}`;
    failFirst.set(path, 1);
    await faults({ webhookUrl: `${receiverUrl}${path}` });
    const paymentId = await payment('20');
    const refundId = (await create([item(paymentId, '7.25')])).json[0].refund_id;
    await processRefunds([{ refund_id: refundId, status: 'APPROVED' }]);

    // Only this payment's events: refunds of earlier tests may settle now and post to the same URL.
    const ofPayment = (h: Hook) => h.path === path && JSON.parse(h.body).payload?.payment_id === paymentId;
    const received = await waitFor('created, approved and completed events', async () => {
      const mine = hooks.filter(ofPayment);
      const types = new Set(mine.map((h) => JSON.parse(h.body).type));
      return types.size === 3 && mine.length >= 4 && mine;
    });
    for (const hook of received) {
      expect(verify(hook)).toBe(true);
      expect(verify({ ...hook, body: hook.body.replace('7.25', '7.26') })).toBe(false);
    }
    const events = received.map((h) => JSON.parse(h.body));
    // The first delivery to arrive (created and approved may be sent together, in either
    // order) was answered 500 and retried: the same event, byte for byte.
    const bodiesByEvent = new Map<string, string[]>();
    for (const h of received) {
      const id = JSON.parse(h.body).event_id as string;
      bodiesByEvent.set(id, [...(bodiesByEvent.get(id) ?? []), h.body]);
    }
    const retried = [...bodiesByEvent.values()].filter((bodies) => bodies.length === 2);
    expect(retried).toHaveLength(1);
    expect(retried[0]![1]).toBe(retried[0]![0]);
    expect(new Set(events.map((e) => e.type))).toEqual(new Set(['refund.created', 'refund.approved', 'refund.completed']));
    const completed = events.find((e) => e.type === 'refund.completed');
    expect(completed).toEqual({
      type: 'refund.completed',
      payload: expect.objectContaining({ refund_id: refundId, payment_id: paymentId, status: 'COMPLETED', amount: 7.25 }),
      message: expect.any(String),
      timestamp: expect.any(String),
      event_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(received.find((h) => JSON.parse(h.body).type === 'refund.completed')!.body).toContain('"amount":7.25');

    const delivered = await waitFor('DELIVERED', async () => {
      const w = (await control('GET', `/webhooks?payment_id=${paymentId}`)).json.data;
      return w.length === 3 && w.every((x: any) => x.status === 'DELIVERED') && w;
    });
    expect(delivered.map((w: any) => w.attempts).sort()).toEqual([1, 1, 2]);
    // Two serving processes, one delivery each: nothing more arrives.
    await new Promise((r) => setTimeout(r, 500));
    expect(hooks.filter(ofPayment)).toHaveLength(4);
  });

  it('applies the event prefix, and the drop and duplicate faults', async () => {
    const dupPath = `/hook/${ref('dup')}`;
    await faults({ webhookUrl: `${receiverUrl}${dupPath}`, duplicateWebhookRate: 1, eventPrefix: 'payout.refund' });
    const p1 = await payment('3');
    const r1 = (await create([item(p1, '3')])).json[0].refund_id;
    await processRefunds([{ refund_id: r1, status: 'REJECTED' }]);
    const twice = await waitFor('duplicated webhooks', async () => {
      const mine = hooks.filter((h) => h.path === dupPath && JSON.parse(h.body).payload?.payment_id === p1);
      return mine.length === 4 && mine;
    });
    const byType = new Map<string, string[]>();
    for (const h of twice) {
      const e = JSON.parse(h.body);
      byType.set(e.type, [...(byType.get(e.type) ?? []), e.event_id]);
    }
    expect([...byType.keys()].sort()).toEqual(['payout.refund.created', 'payout.refund.rejected']);
    for (const ids of byType.values()) expect(new Set(ids).size).toBe(1); // same event_id twice

    const dropPath = `/hook/${ref('drop')}`;
    await faults({ webhookUrl: `${receiverUrl}${dropPath}`, duplicateWebhookRate: 0, dropWebhookRate: 1 });
    const p2 = await payment('3');
    await create([item(p2, '3')]);
    const rows = (await control('GET', `/webhooks?payment_id=${p2}`)).json.data;
    expect(rows).toEqual([expect.objectContaining({ status: 'DROPPED', type: 'payout.refund.created' })]);
    await new Promise((r) => setTimeout(r, 300));
    expect(hooks.filter((h) => h.path === dropPath)).toHaveLength(0);
  });
});

describe('Lean emulator: restarts', () => {
  it('keeps credentials, signing keys and records across a process restart', async () => {
    const paymentId = await payment('10');
    const refundId = (await create([item(paymentId, '2')])).json[0].refund_id; // through process a
    await b.app.close();
    b = await boot(dbUrl, true);
    expect(await b.app.get(LeanSandboxCredentials).lean()).toEqual(creds);
    // A token issued before the restart still verifies.
    const listed = await api('GET', `/payouts/refunds?payment_id=${paymentId}`, undefined, { via: b });
    expect(listed.json.content.map((r: any) => r.refund_id)).toEqual([refundId]);
  });
});
