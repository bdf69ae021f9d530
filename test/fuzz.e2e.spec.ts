import fc from 'fast-check';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/common/problem.js';
import { merchantKey, roleKey, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';

/**
 * Property-based fuzzing of the public endpoints (issue 7, "bad input"). Every answer must be
 * a documented status (a 4xx as application/problem+json with a documented code and no
 * stack trace, or the 2xx of a valid request), never a 5xx; rejected requests persist
 * nothing (row counts before and after each property); the process stays ready and
 * Object.prototype unpolluted.
 *
 * Bounded: FUZZ_RUNS runs per property (default 300), FUZZ_SEED to replay a failure
 * (fast-check prints the seed and the shrunk counterexample).
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const fcParams = { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: true };

/** The documented codes (refunds-api.md §8 and the README's error table). */
const DOCUMENTED_CODES = new Set([
  'validation_failed', 'idempotency_key_required', 'idempotency_key_reused', 'unauthorized', 'forbidden', 'not_found',
  'payment_not_found', 'payment_not_refundable', 'currency_mismatch', 'amount_exceeds_refundable', 'provider_not_configured',
  'invalid_state', 'rate_limited', 'service_unavailable', 'payload_too_large', 'unsupported_media_type',
]);

let svc: TestService;
let merchant: string;
let ops: string;
let admin: string;
/** A binance_pay payment of the merchant whose whole amount is already taken: a valid create gets 422. */
let spentPayment: string;
/** A Cobo refund waiting in requires_action (PATCH target). */
let waitingRefund: string;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

beforeAll(async () => {
  svc = await startService('fuzz', { RATE_LIMIT_PER_MINUTE: '0' });
  merchant = await merchantKey(svc, 'MFUZZ');
  ops = await roleKey(svc, 'ops');
  admin = svc.adminKey;
  await setFaults(svc, 'cobo', { processAfterMs: 50, settleAfterMs: 100 });
  spentPayment = await sandboxPayment(svc, 'binance_pay', '1.00');
  await send('POST', '/v1/refunds', { ...json(), ...bearer(merchant), 'Idempotency-Key': randomUUID() }, JSON.stringify(refundBody())).then(
    (r) => {
      expect(r.status, r.text).toBe(202);
      legitRefunds.push(r.body.id);
    },
  );
  // Cobo names the payment's merchant; without a mapping that is our merchant id.
  const coboPayment = (await svc.http().post('/sandbox/payments').send({ provider: 'cobo', amount: '10.00', currency: 'USDT', merchantId: 'MFUZZ' }).expect(201)).body.paymentId;
  const waiting = await send(
    'POST',
    '/v1/refunds',
    { ...json(), ...bearer(merchant), 'Idempotency-Key': randomUUID() },
    JSON.stringify({ provider: 'cobo', paymentId: coboPayment, amount: '1.00', currency: 'USDT', cobo: { tokenId: 'TRON_USDT' } }),
  );
  expect(waiting.status, waiting.text).toBe(202);
  waitingRefund = waiting.body.id;
  legitRefunds.push(waitingRefund);
  await waitFor(async () => {
    const { rows } = await svc.db.query(`SELECT status FROM refunds WHERE id = $1`, [waitingRefund]);
    return rows[0]?.status === 'requires_action';
  }, 20_000, 'cobo refund in requires_action');
});

afterAll(async () => {
  if (process.env.FUZZ_STATS) {
    for (const [name, seen] of Object.entries(stats)) {
      const total = Object.values(seen).reduce((a, b) => a + b, 0);
      console.log(`${name.replace(/^.*> /, '')}: ${total} requests`, JSON.stringify(seen));
    }
  }
  agent.destroy();
  await svc?.stop();
});

// ---------------------------------------------------------------------------- HTTP

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

/** A raw request: exact bytes and headers, nothing added but Host and Content-Length. */
function send(method: string, path: string, headers: Record<string, string>, body?: Buffer | string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${svc.url}${path}`, { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const json = () => ({ 'Content-Type': 'application/json' });
/** Percent-encodes every byte (works for lone surrogates too, which encodeURIComponent refuses). */
const pct = (s: string) => [...Buffer.from(s, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
const hex = (min: number, max: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'.split('')), minLength: min, maxLength: max });
const bearer = (key: string) => ({ Authorization: `Bearer ${key}` });

/** Answers seen per property (`FUZZ_STATS=1` prints them: the figures for docs/reliability.md). */
const stats: Record<string, Record<string, number>> = {};
let currentProperty = '';

/** Asserts a documented answer with one of `allowed` statuses. */
function documented(res: Res, allowed: number[], what: string): void {
  const seen = (stats[currentProperty] ??= {});
  const label = `${res.status}${res.body?.code ? ` ${res.body.code}` : ''}`;
  seen[label] = (seen[label] ?? 0) + 1;
  const ctx = `${what} -> ${res.status} ${res.text.slice(0, 300)}`;
  expect(res.status, ctx).toBeLessThan(500);
  expect(allowed, ctx).toContain(res.status);
  expect(res.text, ctx).not.toMatch(/\n\s+at |node_modules|\/src\//);
  if (res.status >= 400) {
    expect(res.headers['content-type'], ctx).toMatch(/^application\/problem\+json/);
    expect(res.body?.status, ctx).toBe(res.status);
    expect(DOCUMENTED_CODES.has(res.body?.code), ctx).toBe(true);
    expect(ERROR_CODES[res.body.code as keyof typeof ERROR_CODES].status, ctx).toBe(res.status);
    expect(res.body.stack, ctx).toBeUndefined();
    if (res.body.code === 'validation_failed') expect(Array.isArray(res.body.errors), ctx).toBe(true);
  }
}

const COUNTED = ['refunds', 'refund_events', 'payments', 'api_keys', 'merchants', 'webhook_endpoints', 'audit_events'] as const;
type Counts = Record<(typeof COUNTED)[number], number>;
/** Refunds made on purpose (fixtures, the valid-input property): their own processing adds events. */
const legitRefunds: string[] = [];
async function counts(): Promise<Counts> {
  const out = {} as Counts;
  for (const t of COUNTED) {
    const where = t === 'refund_events' ? ` WHERE refund_id <> ALL($1::uuid[])` : '';
    out[t] = (await svc.db.query(`SELECT count(*)::int AS n FROM ${t}${where}`, where ? [legitRefunds] : [])).rows[0].n;
  }
  return out;
}

async function stillHealthy(): Promise<void> {
  const ready = await send('GET', '/health/ready', {});
  expect(ready.status, ready.text).toBe(200);
  expect(Object.keys(Object.prototype)).toEqual([]);
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
}

/** Runs a property and checks nothing persisted beyond `allowedGrowth` and the service is fine. */
async function fuzz<T>(
  arb: fc.Arbitrary<T>,
  run: (input: T) => Promise<void>,
  allowedGrowth: (before: Counts, after: Counts) => void = noGrowth,
  numRuns = RUNS,
) {
  currentProperty = expect.getState().currentTestName ?? 'unknown';
  const before = await counts();
  await fc.assert(fc.asyncProperty(arb, run), { ...fcParams, numRuns });
  allowedGrowth(before, await counts());
  await stillHealthy();
}
function noGrowth(before: Counts, after: Counts): void {
  expect(after).toEqual(before);
}

// ---------------------------------------------------------------------------- generators

/** JSON text inserted verbatim (numbers JSON.stringify cannot write, invalid JSON, deep nesting). */
class Raw {
  constructor(readonly text: string) {}
}
const raw = (text: string) => new Raw(text);

function toJson(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (Array.isArray(v)) return `[${v.map(toJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${toJson(x)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** Amounts the contract forbids (refunds-api.md §3: decimal strings, never numbers, no exponent). */
const BAD_AMOUNTS: unknown[] = [
  raw('1e3'), raw('0.1e1'), raw('-0'), raw('NaN'), raw('Infinity'), raw('-Infinity'), raw('9'.repeat(40)), raw('1' + '0'.repeat(400)),
  raw('0.1'), raw('25.17'), raw('1E3'), 1000, 0, -1, 0.5, true, null, [], {}, ['1.00'], { amount: '1.00' },
  '1e3', '0.1e1', '-0', 'NaN', 'Infinity', '-1', '-1.00', '+1', '0', '0.0', '0.00000000', '00.1', '01', '1.', '.5', ' 1', '1 ', '1\n',
  '0x10', '0b1', '1_000', '1,00', '1,000.00', '１', '٣', '1.00\u0000', '9'.repeat(40), `0.${'0'.repeat(30)}1`, '1.123456789',
  `${'9'.repeat(21)}.00`, '', ' ', 'abc', '1.0.0', '١٢', 'Ⅻ',
];

const nastyString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', '\ud800', '\udfff\ud800', '😀', '\u202e', '%00', '../../etc/passwd', "' OR 1=1 --", '<script>', '${jndi:x}', 'null', 'undefined', '__proto__', 'constructor'),
  fc.integer({ min: 256, max: 70_000 }).map((n) => 'x'.repeat(n)),
);

/** Deeply nested arrays or objects, written by hand (JSON.stringify would overflow on them). */
const deep = fc.tuple(fc.integer({ min: 17, max: 30_000 }), fc.boolean()).map(([d, arr]) => (arr ? raw('['.repeat(d) + ']'.repeat(d)) : raw('{"a":'.repeat(d) + '1' + '}'.repeat(d))));

const weird: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.constantFrom(...BAD_AMOUNTS), weight: 3 },
  { arbitrary: nastyString, weight: 3 },
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
  fc.constantFrom(raw('{"__proto__":{"polluted":"yes"}}'), raw('{"constructor":{"prototype":{"polluted":"yes"}}}'), raw('{"prototype":{}}')),
  deep,
);

const KEEP = Symbol('keep');
const DROP = Symbol('drop');
// Mostly valid fields, so a body usually has one or two bad parts and reaches deeper checks.
const field = fc.oneof({ arbitrary: fc.constant<typeof KEEP>(KEEP), weight: 12 }, fc.constant<typeof DROP>(DROP), { arbitrary: weird, weight: 3 });
const extraKey = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'merchantId', 'status', 'id', 'refundedAmount', 'extra', ''),
  fc.string({ maxLength: 12 }),
);

function refundBody(paymentId = spentPayment): Record<string, unknown> {
  return { provider: 'binance_pay', paymentId, amount: '1.00', currency: 'USDT', reason: 'requested_by_customer', description: 'fuzz', metadata: { order: '1' } };
}

/** A refund body with some fields dropped or replaced, unknown keys added, or another shape altogether. */
const refundBodyArb = fc
  .record({
    fields: fc.record({
      provider: field, paymentId: field, amount: field, currency: field, reason: field, description: field, metadata: field,
      cobo: fc.oneof({ arbitrary: fc.constant(DROP), weight: 10 }, weird, fc.constant({ tokenId: 'TRON_USDT' })),
      lean: fc.oneof({ arbitrary: fc.constant(DROP), weight: 10 }, weird, fc.constant({ reasonCode: 'CUSTOMER_REQUEST' })),
    }),
    extras: fc.array(fc.tuple(extraKey, weird), { maxLength: 2 }),
    shape: fc.oneof({ arbitrary: fc.constant('object'), weight: 12 }, fc.constantFrom('array', 'string', 'number', 'null', 'empty', 'truncated', 'duplicate-keys')),
  })
  .map(({ fields, extras, shape }) => {
    const base = refundBody();
    const obj: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(fields)) {
      if (v === KEEP) obj[k] = base[k];
      else if (v !== DROP) obj[k] = v;
    }
    let text = toJson(obj);
    if (extras.length) text = `${text.slice(0, -1)}${Object.keys(obj).length ? ',' : ''}${extras.map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`).join(',')}}`;
    switch (shape) {
      case 'array': return `[${text}]`;
      case 'string': return JSON.stringify(text);
      case 'number': return '12.5';
      case 'null': return 'null';
      case 'empty': return '';
      case 'truncated': return text.slice(0, Math.max(1, text.length - 2));
      case 'duplicate-keys': return `${text.slice(0, -1)}${Object.keys(obj).length ? ',' : ''}"amount":"0.1e1"}`;
      default: return text;
    }
  });

/** Query keys of the list endpoints, prototype tricks and junk. */
const queryKey = fc.oneof(
  fc.constantFrom('provider', 'status', 'paymentId', 'merchantId', 'createdFrom', 'createdTo', 'limit', 'cursor', 'stuck', 'failureCode', 'failureCategory', 'review',
    'from', 'to', 'groupBy', '__proto__', 'constructor', '__proto__[polluted]', 'constructor[prototype][polluted]', 'limit[]', 'status[0]', ''),
  fc.string({ maxLength: 10 }),
);
const queryValue = fc.oneof(
  fc.constantFrom('1e3', '0.1e1', '-0', 'NaN', 'Infinity', '9'.repeat(40), '0', '101', '-1', '1.5', 'true', '', 'queued,failed', 'queued,,', 'bogus',
    '2026-01-01', '2026-01-01T00:00:00Z', '0000-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '+275760-09-13T00:00:00Z', '2026-02-30T00:00:00Z',
    'eyJ4IjoxfQ', 'WyIyMDIwLTAxLTAxVDAwOjAwOjAwLjAwMDAwMFoiLCJ4Il0', 'binance_pay', 'retryable'),
  nastyString.map((s) => s.slice(0, 600)),
);
/** One `key=value` of a query string, percent-encoded or with raw, broken escapes. */
const queryPair = fc.tuple(queryKey, queryValue, fc.boolean()).map(([k, v, rawPercent]) =>
  rawPercent ? `${pct(k)}=${v.replace(/[^\x21-\x7e]/g, '%FF').replace(/[#&]/g, '%zz')}` : `${pct(k)}=${pct(v)}`,
);

// ---------------------------------------------------------------------------- properties

describe('fuzzing the public API (fast-check)', () => {
  it('POST /v1/refunds: any body gets a documented 4xx and persists nothing', async () => {
    await fuzz(refundBodyArb, async (text) => {
      const res = await send('POST', '/v1/refunds', { ...json(), ...bearer(merchant), 'Idempotency-Key': randomUUID() }, text);
      // The payment is spent, so even a valid body ends 422; other payment ids are unknown (404).
      documented(res, [400, 404, 413, 422], `POST /v1/refunds ${text.slice(0, 200)}`);
    });
  });

  it('POST /v1/refunds: every malformed amount is 400 validation_failed on `amount`', async () => {
    await fuzz(fc.constantFrom(...BAD_AMOUNTS), async (amount) => {
      const text = toJson({ ...refundBody(), amount });
      const res = await send('POST', '/v1/refunds', { ...json(), ...bearer(merchant), 'Idempotency-Key': randomUUID() }, text);
      documented(res, [400], `amount ${text.slice(0, 200)}`);
      // Not JSON at all (NaN, Infinity) is about the body; anything parseable is about `amount`.
      const fields = res.body.errors.map((e: { field: string }) => e.field);
      let parseable = true;
      try {
        JSON.parse(text);
      } catch {
        parseable = false;
      }
      expect(fields, res.text).toContain(parseable ? 'amount' : 'body');
    });
  });

  it('POST /v1/refunds: headers (Idempotency-Key, Content-Type, Content-Encoding) get documented answers', async () => {
    const headerValue = fc.string({ unit: fc.constantFrom(...'\t aZ09-_.:/;=+,"\\\x80\xe9\xff'.split('')), maxLength: 300 });
    const arb = fc.record({
      key: fc.oneof(fc.constant(undefined), fc.constant(''), fc.constant(' '), headerValue, fc.constant('k'.repeat(255)), fc.constant('k'.repeat(256)), fc.uuid()),
      contentType: fc.oneof(
        { arbitrary: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'Application/JSON'), weight: 4 },
        fc.constantFrom(undefined, 'application/json', 'application/json; charset=utf-8', 'application/json; charset=UTF-16', 'application/json; charset=latin1',
          'application/json;;;', 'text/plain', 'text/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml',
          'application/merge-patch+json', 'application/vnd.api+json', '*/*', 'application/*', 'json', ''),
        headerValue,
      ),
      encoding: fc.constantFrom(undefined, undefined, undefined, undefined, undefined, 'identity', 'gzip', 'gzip-garbage', 'deflate', 'br', 'x-unknown', 'gzip, gzip'),
      accept: fc.constantFrom(undefined, 'application/xml', 'text/html', '*/*'),
    });
    await fuzz(arb, async ({ key, contentType, encoding, accept }) => {
      const headers: Record<string, string> = { ...bearer(merchant) };
      if (key !== undefined) headers['Idempotency-Key'] = key;
      if (contentType !== undefined) headers['Content-Type'] = contentType;
      if (accept !== undefined) headers.Accept = accept;
      let body: Buffer = Buffer.from(JSON.stringify(refundBody()));
      if (encoding === 'gzip') body = gzipSync(body);
      if (encoding !== undefined) headers['Content-Encoding'] = encoding === 'gzip-garbage' ? 'gzip' : encoding;
      const res = await send('POST', '/v1/refunds', headers, body);
      documented(res, [400, 413, 415, 422], `headers ${JSON.stringify(headers)}`);
    });
  });

  it('POST /v1/refunds: arbitrary bytes and invalid UTF-8 get 400 (or 413), never a stored U+FFFD', async () => {
    const invalidUtf8 = fc.constantFrom([0xff], [0xfe, 0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0x80]);
    const arb = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 2000 }).map((b) => Buffer.from(b)),
      fc.tuple(fc.constantFrom('description', 'paymentId', 'currency', 'amount', 'reason'), invalidUtf8).map(([f, bytes]) => {
        const text = JSON.stringify({ ...refundBody(), [f]: 'XX' });
        const at = text.indexOf('"XX"') + 2;
        return Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(bytes), Buffer.from(text.slice(at))]);
      }),
      fc.integer({ min: 60_000, max: 200_000 }).map((n) => Buffer.from(JSON.stringify({ ...refundBody(), description: 'd'.repeat(n) }))),
    );
    await fuzz(arb, async (body) => {
      const res = await send('POST', '/v1/refunds', { ...json(), ...bearer(merchant), 'Idempotency-Key': randomUUID() }, body);
      documented(res, [400, 413], `bytes ${body.subarray(0, 80).toString('hex')}`);
    });
  });

  it('GET /v1/refunds: any query string gets 200 or 400', async () => {
    const arb = fc.record({ pairs: fc.array(queryPair, { maxLength: 6 }), asOps: fc.boolean() });
    await fuzz(arb, async ({ pairs, asOps }) => {
      const path = `/v1/refunds?${pairs.join('&')}`;
      const res = await send('GET', path, bearer(asOps ? ops : merchant));
      documented(res, [200, 400], `GET ${path.slice(0, 300)}`);
      if (res.status === 200) expect(Array.isArray(res.body.data)).toBe(true);
    });
  });

  it('GET and PATCH /v1/refunds/{id}: any id and body get a documented answer', async () => {
    const id = fc.oneof(fc.constant(undefined), fc.uuid(), nastyString.map((s) => s.slice(0, 300)), fc.constantFrom('%zz', '%FF', '%00', '..', '.', '%2e%2e', '%2F'));
    const body = fc.oneof(
      fc.constant(JSON.stringify({ cobo: {} })),
      fc.record({ toAddress: weird }).map((c) => toJson({ cobo: c })),
      fc.tuple(extraKey, weird).map(([k, v]) => `{"cobo":{"toAddress":"Tfuzz"},${JSON.stringify(k)}:${toJson(v)}}`),
      weird.map((v) => toJson({ cobo: v })),
      weird.map(toJson),
    );
    await fuzz(fc.record({ id, body, method: fc.constantFrom('GET', 'PATCH', 'PATCH') }), async ({ id, body, method }) => {
      const seg = id === undefined ? waitingRefund : /^%|^\.+$/.test(id) ? id : pct(id);
      const res = await send(method, `/v1/refunds/${seg}`, { ...json(), ...bearer(merchant) }, method === 'GET' ? undefined : body);
      documented(res, method === 'GET' ? [200, 400, 404] : [200, 400, 404, 409, 413], `${method} /v1/refunds/${seg} ${body.slice(0, 200)}`);
    }, (before, after) => {
      // A PATCH that happened to be valid moves the waiting refund on (events); nothing else grows.
      expect({ ...after, refund_events: 0 }).toEqual({ ...before, refund_events: 0 });
    });
  });

  it('POST /v1/api-keys: only valid bodies create a key (one row, one audit event each)', async () => {
    let created = 0;
    const arb = fc.record({
      role: fc.oneof(fc.constantFrom('merchant', 'ops', 'finance', 'admin'), weird),
      merchantId: fc.oneof(fc.constant(DROP), fc.constantFrom('MFUZZKEY', 'a.b-c_d'), weird),
      name: fc.oneof(fc.constant('fuzz'), fc.constant(DROP), weird),
      extras: fc.array(fc.tuple(extraKey, weird), { maxLength: 1 }),
    });
    await fuzz(arb, async ({ role, merchantId, name, extras }) => {
      const obj: Record<string, unknown> = { role };
      if (merchantId !== DROP) obj.merchantId = merchantId;
      if (name !== DROP) obj.name = name;
      let text = toJson(obj);
      if (extras.length) text = `${text.slice(0, -1)},${extras.map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`).join(',')}}`;
      const res = await send('POST', '/v1/api-keys', { ...json(), ...bearer(admin) }, text);
      documented(res, [201, 400, 413], `POST /v1/api-keys ${text.slice(0, 200)}`);
      if (res.status === 201) {
        created++;
        expect(res.body.key).toMatch(/^rk_(merchant|ops|finance|admin)_[A-Za-z0-9_-]{43}$/);
      }
    }, (before, after) => {
      expect(after.api_keys - before.api_keys).toBe(created);
      expect(after.audit_events - before.audit_events).toBe(created);
      expect(after.merchants - before.merchants).toBeLessThanOrEqual(created);
      expect({ ...after, api_keys: 0, audit_events: 0, merchants: 0 }).toEqual({ ...before, api_keys: 0, audit_events: 0, merchants: 0 });
    });
  });

  it('PUT /v1/merchants/{id}: invalid ids and bodies get 400 and create or change nothing', async () => {
    await svc.db.query(`INSERT INTO merchants (id, name) VALUES ('MFUZZPUT', 'before') ON CONFLICT (id) DO NOTHING`);
    const snapshot = async () => (await svc.db.query(`SELECT t::text AS row FROM merchants t WHERE id = 'MFUZZPUT'`)).rows[0].row as string;
    const original = await snapshot();
    const existing = new Set((await svc.db.query(`SELECT id FROM merchants`)).rows.map((r) => r.id as string));
    const accepted = new Set<string>();
    let lastAccepted: string | undefined;
    const rejected = new Set<string>();
    const account = fc.oneof(fc.constant(DROP), fc.constant({ merchantId: 'acct-1' }), fc.record({ merchantId: weird }), weird);
    const arb = fc.record({
      id: fc.oneof(fc.constantFrom('MFUZZPUT', 'MFUZZNEW'), nastyString.map((s) => s.slice(0, 100))),
      name: fc.oneof(fc.constant(DROP), fc.constant('Fuzz Ltd'), weird),
      approvalThresholds: fc.oneof(fc.constant(DROP), fc.constant({ USDT: '1000' }), fc.dictionary(fc.oneof(fc.constantFrom('USDT', 'AED', '__proto__', 'usdt'), fc.string({ maxLength: 13 })), weird, { maxKeys: 3 }), weird),
      cobo: account,
      lean: account,
      binancePay: account,
      extras: fc.array(fc.tuple(extraKey, weird), { maxLength: 1 }),
    });
    await fuzz(arb, async ({ id, extras, ...fields }) => {
      const obj: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(fields)) if (v !== DROP) obj[k] = v;
      let text = toJson(obj);
      if (extras.length) text = `${text.slice(0, -1)}${Object.keys(obj).length ? ',' : ''}${extras.map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`).join(',')}}`;
      const res = await send('PUT', `/v1/merchants/${pct(id)}`, { ...json(), ...bearer(admin) }, text);
      // An empty id is no route at all (404).
      documented(res, [200, 400, 404, 413], `PUT /v1/merchants/${id} ${text.slice(0, 200)}`);
      (res.status === 200 ? accepted : rejected).add(id);
      if (res.status >= 400 && id === 'MFUZZPUT') expect(await snapshot(), 'a rejected PUT changed the merchant').toBe(lastAccepted ?? original);
      if (res.status === 200 && id === 'MFUZZPUT') lastAccepted = await snapshot();
    }, (before, after) => {
      expect(after.merchants - before.merchants).toBeLessThanOrEqual(accepted.size);
      expect({ ...after, merchants: 0 }).toEqual({ ...before, merchants: 0 });
    });
    const { rows } = await svc.db.query(`SELECT id FROM merchants WHERE id = ANY($1::text[])`, [[...rejected].filter((id) => !existing.has(id) && !accepted.has(id) && !/[\u0000\uD800-\uDFFF]/u.test(id))]);
    expect(rows, 'merchants created by rejected requests').toEqual([]);
  });

  it('every other /v1 route: random ids, queries and bodies get documented answers', async () => {
    type Who = 'merchant' | 'ops' | 'finance' | 'admin';
    // [method, path, caller]; `:id` is a refund, endpoint, run or key id (real or random).
    const routes: Array<[string, string, Who]> = [
      ['POST', '/v1/refunds/retry', 'ops'],
      ['POST', '/v1/refunds/:refund/cancel', 'merchant'],
      ['POST', '/v1/refunds/:refund/retry', 'ops'],
      ['POST', '/v1/refunds/:refund/approve', 'ops'],
      ['POST', '/v1/refunds/:refund/reject', 'ops'],
      ['POST', '/v1/refunds/:refund/review/resolve', 'ops'],
      ['POST', '/v1/refunds/:refund/sync', 'ops'],
      ['GET', '/v1/refunds/:refund/attempts', 'merchant'],
      ['GET', '/v1/refunds/:refund/events', 'merchant'],
      ['GET', '/v1/payments/:provider/:payment', 'merchant'],
      ['GET', '/v1/refund-reasons', 'merchant'],
      ['POST', '/v1/webhook-endpoints', 'merchant'],
      ['GET', '/v1/webhook-endpoints', 'ops'],
      ['GET', '/v1/webhook-endpoints/:endpoint', 'merchant'],
      ['DELETE', '/v1/webhook-endpoints/:endpoint', 'merchant'],
      ['GET', '/v1/webhook-endpoints/:endpoint/deliveries', 'merchant'],
      ['POST', '/v1/webhook-endpoints/:endpoint/deliveries/:delivery/redeliver', 'ops'],
      ['DELETE', '/v1/api-keys/:key', 'admin'],
      ['GET', '/v1/merchants/:merchant', 'admin'],
      ['GET', '/v1/reports/summary', 'finance'],
      ['GET', '/v1/reports/refunds.csv', 'finance'],
      ['POST', '/v1/reconciliations', 'finance'],
      ['GET', '/v1/reconciliations', 'finance'],
      ['GET', '/v1/reconciliations/:run', 'finance'],
    ];
    const keys: Record<Who, string> = { merchant, ops, finance: await roleKey(svc, 'finance'), admin };
    const id = fc.oneof(fc.constant('real'), fc.uuid(), nastyString.map((x) => x.slice(0, 200)), fc.constantFrom('%zz', '%FF', '..', 'binance_pay', 'cobo'));
    const body = fc.oneof(
      fc.constant(undefined),
      fc.record({ comment: weird }).map(toJson),
      fc.record({ url: fc.oneof(weird, fc.constantFrom('http://127.0.0.1:9/x', 'https://example.com/hook', 'javascript:alert(1)', 'http://user:pw@example.com/', 'file:///etc/passwd', `https://e.com/${'a'.repeat(3000)}`)) }).map(toJson),
      fc.record({ provider: field, from: weird, to: weird, failureCode: weird, limit: weird }, { requiredKeys: [] }).map((o) => toJson(Object.fromEntries(Object.entries(o).filter(([, v]) => v !== KEEP && v !== DROP)))),
      refundBodyArb,
      weird.map(toJson),
    );
    let endpointsCreated = 0;
    const arb = fc.record({ route: fc.constantFrom(...routes), ids: fc.array(id, { minLength: 3, maxLength: 3 }), pairs: fc.array(queryPair, { maxLength: 3 }), body });
    await fuzz(arb, async ({ route: [method, template, who], ids, pairs, body }) => {
      let i = 0;
      const path = template.replace(/:([a-z]+)/g, (_, kind: string) => {
        const v = ids[i++];
        if (v !== 'real') return /^%|^\.+$/.test(v) ? v : pct(v);
        return kind === 'refund' ? waitingRefund : kind === 'provider' ? 'binance_pay' : kind === 'payment' ? spentPayment : kind === 'merchant' ? 'MFUZZ' : randomUUID();
      });
      const url = pairs.length ? `${path}?${pairs.join('&')}` : path;
      const res = await send(method, url, { ...json(), ...bearer(keys[who]) }, method === 'GET' || method === 'DELETE' ? undefined : body);
      documented(res, [200, 201, 202, 204, 400, 404, 409, 413, 422], `${method} ${url.slice(0, 300)} ${String(body).slice(0, 200)}`);
      if (res.status === 201 && template === '/v1/webhook-endpoints') endpointsCreated++;
    }, (before, after) => {
      expect(after.webhook_endpoints - before.webhook_endpoints).toBe(endpointsCreated);
      // Ops actions and endpoint changes are audited; nothing else grows.
      expect({ ...after, webhook_endpoints: 0, audit_events: 0 }).toEqual({ ...before, webhook_endpoints: 0, audit_events: 0 });
    });
  });

  it('POST /webhooks/*: random bodies and headers are refused (401, or 400/413/415 for unreadable bodies) and change nothing', async () => {
    const sigHeaders = fc.record(
      {
        'binancepay-certificate-sn': nastyString.map((s) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '').slice(0, 200)),
        'binancepay-nonce': fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')),
        'binancepay-timestamp': fc.oneof(fc.constant(String(Date.now())), fc.constantFrom('0', '-1', '1e3', '9'.repeat(40), 'NaN')),
        'binancepay-signature': fc.base64String({ maxLength: 400 }),
        'biz-timestamp': fc.oneof(fc.constant(String(Date.now())), fc.constantFrom('0', '9'.repeat(40), 'x')),
        'biz-resp-signature': fc.oneof(hex(0, 130), fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\x20-\x7e]/g, ''))),
        'lean-signature': fc.oneof(hex(128, 128).map((h) => `sha512=${h}`), fc.constantFrom('sha512=', 'sha256=00', '')),
      },
      { requiredKeys: [] },
    );
    const arb = fc.record({
      path: fc.constantFrom('/webhooks/binance-pay', '/webhooks/cobo', '/webhooks/lean'),
      headers: sigHeaders,
      contentType: fc.constantFrom(undefined, 'application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'application/octet-stream'),
      body: fc.oneof(
        refundBodyArb.map((t) => Buffer.from(t)),
        fc.uint8Array({ maxLength: 1000 }).map((b) => Buffer.from(b)),
        fc.constantFrom(
          '{"bizType":"PAY_REFUND","bizStatus":"REFUND_SUCCESS","data":"{\\"refundInfo\\":{\\"refundRequestId\\":\\"x\\"}}"}',
          '{"type":"payment.refund.status.updated","data":{"request_id":"x","status":"Completed"}}',
          '{"type":"refund.updated","payload":{"refund_id":"x"}}',
        ).map((s) => Buffer.from(s)),
        fc.integer({ min: 65_000, max: 120_000 }).map((n) => Buffer.from(`{"a":"${'x'.repeat(n)}"}`)),
      ),
    });
    await fuzz(arb, async ({ path, headers, contentType, body }) => {
      const h: Record<string, string> = { ...headers };
      if (contentType !== undefined) h['Content-Type'] = contentType;
      const res = await send('POST', path, h, body);
      documented(res, [400, 401, 413, 415], `POST ${path} ${JSON.stringify(h).slice(0, 300)}`);
    });
  });

  it('valid creates still work after all that: random valid refunds are 202 and persisted exactly once', async () => {
    let paymentId = '';
    let accepted = 0;
    const arb = fc.record({
      cents: fc.integer({ min: 1, max: 5000 }),
      reason: fc.constantFrom('requested_by_customer', 'duplicate', 'fraudulent', 'order_canceled', 'other'),
      description: fc.string({ maxLength: 500 }).filter((s) => !s.includes('\u0000')),
      metadata: fc.dictionary(fc.string({ minLength: 1, maxLength: 40 }).filter((k) => !(k in Object.prototype) && k !== 'prototype' && !k.includes('\u0000')), fc.string({ maxLength: 500 }).filter((s) => !s.includes('\u0000')), { maxKeys: 50 }),
    });
    await fuzz(
      arb,
      async ({ cents, reason, description, metadata }) => {
        // A new payment now and then: one payment's refunds all queue behind its row lock.
        if (accepted % 10 === 0) paymentId = await sandboxPayment(svc, 'lean', '1000000.00', 'AED');
        const amount = `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
        const key = randomUUID();
        const text = JSON.stringify({ provider: 'lean', paymentId, amount, currency: 'AED', reason, description, metadata });
        const res = await send('POST', '/v1/refunds', { ...json(), ...bearer(merchant), 'Idempotency-Key': key }, text);
        documented(res, [202], `valid create ${text.slice(0, 200)}`);
        accepted++;
        legitRefunds.push(res.body.id);
        expect(res.body).toMatchObject({ amount: amount.replace(/\.?0+$/, ''), description, metadata, reason });
        const again = await send('POST', '/v1/refunds', { ...json(), ...bearer(merchant), 'Idempotency-Key': key }, text);
        documented(again, [200], 'replay');
        expect(again.body.id).toBe(res.body.id);
      },
      (before, after) => {
        expect(after.refunds - before.refunds).toBe(accepted);
      },
      // Valid input is the control group, not the fuzzing: fewer runs (each one is processed).
      Math.max(20, Math.round(RUNS / 4)),
    );
  });
});
