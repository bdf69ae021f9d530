import { parse } from 'csv-parse/sync';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatAmount } from '../src/common/money.js';
import { unescapeCell } from '../src/reports/csv-cell.js';
import { merchantKey, roleKey, startService, TestService, waitFor } from './support/service.js';

// ROLE=api: no worker touches the refunds this suite writes straight into the database.
let svc: TestService;
let finance: string;
let ops: string;

const HEADER = [
  'id',
  'merchant_id',
  'provider',
  'payment_id',
  'provider_refund_id',
  'provider_request_id',
  'amount',
  'refunded_amount',
  'currency',
  'status',
  'failure_code',
  'failure_category',
  'reason',
  'merchant_fee_amount',
  'merchant_fee_token',
  'provider_commission',
  'created_at',
  'completed_at',
];

// ---------------------------------------------------------------------------------------
// Exact decimal arithmetic for the expected values, independent of Postgres and decimal.js:
// amounts as BigInt counts of 1e-18.
const SCALE = 18;
function toUnits(s: string): bigint {
  const [int, frac = ''] = s.split('.');
  return BigInt(int) * 10n ** BigInt(SCALE) + BigInt((frac + '0'.repeat(SCALE)).slice(0, SCALE) || '0');
}
function fromUnits(u: bigint): string {
  const int = u / 10n ** BigInt(SCALE);
  const frac = (u % 10n ** BigInt(SCALE)).toString().padStart(SCALE, '0').replace(/0+$/, '');
  return frac ? `${int}.${frac}` : `${int}`;
}

// ---------------------------------------------------------------------------------------
// The data set: rows as the test means them, inserted with SQL.
interface Seed {
  merchant: string;
  provider: 'binance_pay' | 'cobo' | 'lean';
  paymentId: string;
  amount: string;
  refunded?: string;
  currency: string;
  status: string;
  createdAt: string; // ISO with microseconds, UTC
  failureCode?: string;
  failureCategory?: 'retryable' | 'final';
  providerRefundId?: string;
  providerRequestId?: string;
  details?: Record<string, unknown>;
  options?: Record<string, unknown>;
  review?: string;
  reason?: string;
}

const FINAL = ['succeeded', 'partially_succeeded', 'failed', 'canceled'];
const seeds: Seed[] = [];
const ts = (day: number, sec: number, micros = 0) =>
  `2025-03-${String(day).padStart(2, '0')}T${new Date(sec * 1000).toISOString().slice(11, 19)}.${String(micros).padStart(6, '0')}Z`;

function buildSeeds(): void {
  let n = 0;
  // A: 0.1 and 0.2, ten of each, which floats sum to 3.0000000000000004.
  for (let i = 0; i < 10; i++) {
    seeds.push({ merchant: 'M1', provider: 'binance_pay', paymentId: 'BP-1', amount: '0.1', currency: 'USDT', status: 'succeeded', createdAt: ts(1, 100 + n++, 123456), details: { refundCommission: '0.001' } });
    seeds.push({ merchant: 'M1', provider: 'binance_pay', paymentId: 'BP-1', amount: '0.2', currency: 'USDT', status: 'succeeded', createdAt: ts(1, 100 + n++, 999999) });
  }
  // B: 1e-18 values next to 19-digit integers, one with 18 decimals.
  for (let i = 0; i < 3; i++) {
    seeds.push({ merchant: 'M2', provider: 'cobo', paymentId: 'CO-1', amount: '0.000000000000000001', currency: 'USDT', status: 'succeeded', createdAt: ts(1, 200 + i) });
  }
  seeds.push({ merchant: 'M2', provider: 'cobo', paymentId: 'CO-1', amount: '9999999999999999999', currency: 'USDT', status: 'succeeded', createdAt: ts(2, 10), details: { merchantFee: { amount: '0.1', tokenId: 'TRON_USDT' }, commissionFee: '0.35', tokenId: 'TRON_USDT' }, options: { tokenId: 'TRON_USDT', refundType: 'merchant', merchantFee: { amount: '0.10', tokenId: 'TRON_USDT' } } });
  seeds.push({ merchant: 'M2', provider: 'cobo', paymentId: 'CO-1', amount: '1234567890123456789.123456789012345678', currency: 'USDT', status: 'succeeded', createdAt: ts(2, 11) });
  // C: partial, failed, canceled and open refunds, other currencies, review flags.
  seeds.push({ merchant: 'M1', provider: 'lean', paymentId: 'LE-1', amount: '100.10', refunded: '50.05', currency: 'AED', status: 'partially_succeeded', createdAt: ts(2, 20), details: { reasonCode: 'DUPLICATE', externalReference: 'ref-1' } });
  seeds.push({ merchant: 'M1', provider: 'lean', paymentId: 'LE-1', amount: '0.3', currency: 'AED', status: 'failed', failureCode: 'rejected', failureCategory: 'final', createdAt: ts(2, 21), review: 'provider reports COMPLETED' });
  seeds.push({ merchant: 'M1', provider: 'lean', paymentId: 'LE-2', amount: '7.77', currency: 'SAR', status: 'queued', createdAt: ts(2, 22) });
  seeds.push({ merchant: 'M2', provider: 'binance_pay', paymentId: 'BP-2', amount: '12.5', currency: 'USDT', status: 'processing', createdAt: ts(3, 0, 1), providerRequestId: 'req-open-1' });
  seeds.push({ merchant: 'M2', provider: 'cobo', paymentId: 'CO-2', amount: '3.33', currency: 'USDC', status: 'requires_action', createdAt: ts(3, 5) });
  seeds.push({ merchant: 'M2', provider: 'cobo', paymentId: 'CO-2', amount: '1.01', currency: 'USDC', status: 'canceled', createdAt: ts(3, 6) });
  seeds.push({ merchant: 'M1', provider: 'binance_pay', paymentId: 'BP-2', amount: '1000', currency: 'USDT', status: 'pending_approval', createdAt: ts(3, 7) });
  // D: cells a spreadsheet would run as formulas, and CSV-hostile text.
  seeds.push({
    merchant: '-M3',
    provider: 'binance_pay',
    paymentId: '-2+3',
    amount: '0.2',
    currency: 'USDT',
    status: 'failed',
    createdAt: ts(3, 8),
    failureCode: '=HYPERLINK("http://evil.example","x")',
    failureCategory: 'retryable',
    providerRefundId: '+1 "quoted", with\r\nnewline',
    providerRequestId: '@SUM(A1:A2)',
  });
  seeds.push({ merchant: '-M3', provider: 'cobo', paymentId: "'already", amount: '0.1', currency: 'USDT', status: 'failed', createdAt: ts(3, 9), failureCode: '\tTAB', failureCategory: 'final', providerRefundId: "'=1+1", details: { merchantFee: { amount: '0.01', tokenId: '\rTRON' }, commissionFee: 'not-a-number' } });
  // Two refunds with the same created_at: ordered by id.
  seeds.push({ merchant: 'M1', provider: 'lean', paymentId: 'LE-2', amount: '2', currency: 'SAR', status: 'succeeded', createdAt: ts(3, 10) });
  seeds.push({ merchant: 'M1', provider: 'lean', paymentId: 'LE-2', amount: '3', currency: 'SAR', status: 'succeeded', createdAt: ts(3, 10) });
}

async function insertSeeds(): Promise<void> {
  const merchants = [...new Set(seeds.map((s) => s.merchant))];
  for (const m of merchants) await svc.db.query(`INSERT INTO merchants (id) VALUES ($1) ON CONFLICT DO NOTHING`, [m]);
  const payments = new Map(seeds.map((s) => [`${s.provider}/${s.paymentId}`, s]));
  for (const s of payments.values()) {
    await svc.db.query(
      `INSERT INTO payments (provider, payment_id, merchant_id, amount, currency, status) VALUES ($1, $2, $3, 99999999999999999999, $4, 'PAID')`,
      [s.provider, s.paymentId, s.merchant, s.currency],
    );
  }
  for (const s of seeds) {
    const final = FINAL.includes(s.status);
    const refunded = s.status === 'succeeded' ? s.amount : s.status === 'partially_succeeded' ? s.refunded! : '0';
    const id = randomUUID();
    await svc.db.query(
      `INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, refunded_amount, currency, status, reason,
                            provider_request_id, provider_refund_id, failure_code, failure_category, provider_details,
                            provider_options, idempotency_key, request_hash, next_check_at, created_at, updated_at,
                            status_changed_at, completed_at, review_reason, review_flagged_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'h',
               CASE WHEN $8 IN ('queued', 'processing', 'requires_action') THEN now() END,
               $17::timestamptz, $17::timestamptz, $17::timestamptz,
               CASE WHEN $18 THEN $17::timestamptz + interval '90.5 seconds' END,
               $19::text, CASE WHEN $19::text IS NOT NULL THEN now() END)`,
      [
        id,
        s.merchant,
        s.provider,
        s.paymentId,
        s.amount,
        refunded,
        s.currency,
        s.status,
        s.reason ?? 'requested_by_customer',
        s.providerRequestId ?? (s.status === 'pending_approval' ? null : `req-${id}`),
        s.providerRefundId ?? (final ? `prov-${id.slice(0, 8)}` : null),
        s.failureCode ?? null,
        s.failureCategory ?? null,
        s.details ?? {},
        s.options ?? {},
        `idem-${id}`,
        s.createdAt,
        final,
        s.review ?? null,
      ],
    );
    await svc.db.query(`INSERT INTO refund_events (refund_id, from_status, to_status, actor, created_at) VALUES ($1, NULL, 'queued', 'api_key:test', $2)`, [id, s.createdAt]);
  }
}

/** What the summary must say, computed here with BigInt fixed point. */
function expectedSummary(rows: Seed[], keys: (s: Seed) => Record<string, string>): Record<string, unknown>[] {
  const groups = new Map<string, { key: Record<string, string>; count: number; amount: bigint; refunded: bigint }>();
  for (const s of rows) {
    const key = keys(s);
    const k = JSON.stringify(key);
    const g = groups.get(k) ?? { key, count: 0, amount: 0n, refunded: 0n };
    g.count++;
    g.amount += toUnits(s.amount);
    g.refunded += toUnits(s.status === 'succeeded' ? s.amount : s.status === 'partially_succeeded' ? s.refunded! : '0');
    groups.set(k, g);
  }
  return [...groups.values()].map((g) => ({ ...g.key, count: g.count, amount: fromUnits(g.amount), refundedAmount: fromUnits(g.refunded) }));
}

const sortRows = (rows: Record<string, unknown>[]) => [...rows].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

function summary(query: string, key = finance) {
  return svc.http().get(`/v1/reports/summary${query}`).set('Authorization', `Bearer ${key}`);
}

function csv(query: string, key = finance) {
  return svc
    .http()
    .get(`/v1/reports/refunds.csv${query}`)
    .set('Authorization', `Bearer ${key}`)
    .buffer(true)
    .parse((res, cb) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => cb(null, text));
    });
}

/** Strict RFC 4180 parse (CRLF records, quotes only where needed), then the escape undone. */
function parseCsv(text: string): string[][] {
  const records = parse(text, { record_delimiter: '\r\n', relax_quotes: false, relax_column_count: false, skip_empty_lines: false }) as string[][];
  return records.map((r) => r.map(unescapeCell));
}

/** The CSV rows the database holds, computed from raw columns (independently of the view). */
async function expectedCsvRows(where = 'TRUE', params: unknown[] = []): Promise<string[][]> {
  const { rows } = await svc.db.query(`SELECT * FROM refunds WHERE ${where} ORDER BY created_at, id`, params);
  const dec = (v: unknown) => (typeof v === 'string' && /^\d+(\.\d+)?$/.test(v) ? formatAmount(v) : '');
  return rows.map((r) => {
    const d = r.provider_details as Record<string, any>;
    const fee = r.provider === 'cobo' ? d.merchantFee : undefined;
    const commission = r.provider === 'binance_pay' ? d.refundCommission : r.provider === 'cobo' ? d.commissionFee : undefined;
    return [
      r.id,
      r.merchant_id,
      r.provider,
      r.payment_id,
      r.provider_refund_id ?? '',
      r.provider_request_id ?? '',
      formatAmount(r.amount),
      formatAmount(r.refunded_amount),
      r.currency,
      r.status,
      r.failure_code ?? '',
      r.failure_category ?? '',
      r.reason,
      dec(fee?.amount),
      fee?.tokenId ?? '',
      dec(commission),
      (r.created_at as Date).toISOString(),
      r.completed_at ? (r.completed_at as Date).toISOString() : '',
    ];
  });
}

beforeAll(async () => {
  svc = await startService('reports', { ROLE: 'api' });
  finance = await roleKey(svc, 'finance');
  ops = await roleKey(svc, 'ops');
  buildSeeds();
  await insertSeeds();
});

afterAll(async () => {
  await svc?.stop();
});

describe('GET /v1/reports/summary', () => {
  it('groups by provider, currency and status by default, with exact decimal sums', async () => {
    const res = await summary('').expect(200);
    expect(sortRows(res.body.data)).toEqual(
      sortRows(expectedSummary(seeds, (s) => ({ provider: s.provider, currency: s.currency, status: s.status }))),
    );
    const find = (p: string, c: string, st: string) =>
      res.body.data.find((r: { provider: string; currency: string; status: string }) => r.provider === p && r.currency === c && r.status === st);
    // Hand-computed: 10 x 0.1 + 10 x 0.2 (floats: 3.0000000000000004).
    expect(find('binance_pay', 'USDT', 'succeeded')).toEqual({ provider: 'binance_pay', currency: 'USDT', status: 'succeeded', count: 20, amount: '3', refundedAmount: '3' });
    // 3e-18 + 9999999999999999999 + 1234567890123456789.123456789012345678 (floats: 1.1234567890123458e19).
    expect(find('cobo', 'USDT', 'succeeded')).toEqual({
      provider: 'cobo',
      currency: 'USDT',
      status: 'succeeded',
      count: 5,
      amount: '11234567890123456788.123456789012345681',
      refundedAmount: '11234567890123456788.123456789012345681',
    });
    expect(find('lean', 'AED', 'partially_succeeded')).toMatchObject({ count: 1, amount: '100.1', refundedAmount: '50.05' });
  });

  it('groups by merchant and UTC day, and filters by from/to (to exclusive), provider and status', async () => {
    const res = await summary('?groupBy=merchant,day').expect(200);
    expect(sortRows(res.body.data)).toEqual(sortRows(expectedSummary(seeds, (s) => ({ merchantId: s.merchant, day: s.createdAt.slice(0, 10) }))));

    // A row created at exactly `to` is outside; one at exactly `from` is inside.
    const from = ts(1, 200);
    const to = ts(3, 0, 1);
    const filtered = await summary(`?groupBy=provider&from=${from}&to=${to}&status=succeeded,partially_succeeded,failed`).expect(200);
    const inRange = seeds.filter(
      (s) => s.createdAt >= from && s.createdAt < to && ['succeeded', 'partially_succeeded', 'failed'].includes(s.status),
    );
    expect(sortRows(filtered.body.data)).toEqual(sortRows(expectedSummary(inRange, (s) => ({ provider: s.provider }))));

    const one = await summary(`?groupBy=currency&provider=cobo&merchantId=M2`).expect(200);
    expect(sortRows(one.body.data)).toEqual(
      sortRows(expectedSummary(seeds.filter((s) => s.provider === 'cobo' && s.merchant === 'M2'), (s) => ({ currency: s.currency }))),
    );
  });

  it('an empty groupBy is one total row; an empty range is no rows (or a zero total)', async () => {
    const total = await summary('?groupBy=').expect(200);
    expect(total.body.data).toEqual(expectedSummary(seeds, () => ({})));
    const none = await summary('?from=2030-01-01&groupBy=provider').expect(200);
    expect(none.body.data).toEqual([]);
    const zero = await summary('?from=2030-01-01&groupBy=').expect(200);
    expect(zero.body.data).toEqual([{ count: 0, amount: '0', refundedAmount: '0' }]);
  });

  it('rejects unknown groupBy values, bad filters and merchant keys', async () => {
    const bad = await summary('?groupBy=provider,colour').expect(400);
    expect(bad.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(bad.body.code).toBe('validation_failed');
    expect(bad.body.errors[0]).toMatchObject({ field: 'groupBy' });
    expect((await summary('?groupBy=day,day').expect(400)).body.code).toBe('validation_failed');
    expect((await summary('?from=yesterday').expect(400)).body.code).toBe('validation_failed');
    expect((await summary('?from=2025-03-02&to=2025-03-01').expect(400)).body.code).toBe('validation_failed');
    expect((await summary('?provider=stripe').expect(400)).body.code).toBe('validation_failed');
    expect((await summary('?status=done').expect(400)).body.code).toBe('validation_failed');
    expect((await summary('?limit=5').expect(400)).body.code).toBe('validation_failed');

    const merchant = await merchantKey(svc, 'M1');
    expect((await summary('', merchant).expect(403)).body.code).toBe('forbidden');
    expect((await csv('', merchant).expect(403)).body).toContain('"forbidden"');
    await svc.http().get('/v1/reports/summary').expect(401);
    await summary('', ops).expect(200);
    await summary('', svc.adminKey).expect(200);
  });
});

describe('GET /v1/reports/refunds.csv', () => {
  it('parses back to exactly the rows in the database, every column, ordered by created_at then id', async () => {
    const res = await csv('').expect(200);
    expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(res.headers['content-disposition']).toMatch(/^attachment; filename="refunds-\d{8}T\d{6}Z\.csv"$/);
    const text = res.body as string;
    expect(text.startsWith(`${HEADER.join(',')}\r\n`)).toBe(true);
    const [header, ...rows] = parseCsv(text);
    expect(header).toEqual(HEADER);
    expect(rows).toHaveLength(seeds.length);
    expect(rows).toEqual(await expectedCsvRows());
    // Spot checks of the formatting: canonical decimals, UTC with milliseconds (microseconds cut).
    const big = rows.find((r) => r[6] === '1234567890123456789.123456789012345678');
    expect(big).toBeDefined();
    expect(rows.find((r) => r[6] === '100.1')![7]).toBe('50.05');
    expect(rows[0][16]).toBe('2025-03-01T00:01:40.123Z');
    expect(rows[0][17]).toBe('2025-03-01T00:03:10.623Z');
    expect(rows[0][15]).toBe('0.001'); // Binance refundCommission
    const cobo = rows.find((r) => r[6] === '9999999999999999999')!;
    expect(cobo.slice(13, 16)).toEqual(['0.1', 'TRON_USDT', '0.35']); // Cobo merchant fee and commission
  });

  it('escapes formula cells with a leading quote and leaves every other cell alone', async () => {
    const text = (await csv('?merchantId=-M3').expect(200)).body as string;
    const raw = parse(text, { record_delimiter: '\r\n' }) as string[][];
    expect(raw).toHaveLength(3);
    const [, first, second] = raw;
    expect(first[1]).toBe("'-M3");
    expect(first[3]).toBe("'-2+3");
    expect(first[4]).toBe(`'+1 "quoted", with\r\nnewline`);
    expect(first[5]).toBe("'@SUM(A1:A2)");
    expect(first[10]).toBe(`'=HYPERLINK("http://evil.example","x")`);
    expect(first[6]).toBe('0.2');
    expect(second[3]).toBe("''already");
    expect(second[4]).toBe("''=1+1");
    expect(second[10]).toBe("'\tTAB");
    expect(second[14]).toBe("'\rTRON");
    expect(second[15]).toBe(''); // a commission that is not a number is left out, not guessed
    // No raw cell of the file starts with a formula trigger.
    for (const cell of raw.flat()) expect(cell).not.toMatch(/^[=+\-@\t\r\uFF1D\uFF0B\uFF0D\uFF20]/);
    // The quoting of the comma, quote and newline is RFC 4180.
    expect(text).toContain(`"'+1 ""quoted"", with\r\nnewline"`);
  });

  it('filters like the summary, and an empty result is just the header row', async () => {
    const from = ts(2, 0);
    const to = ts(3, 8);
    const [, ...rows] = parseCsv((await csv(`?from=${from}&to=${to}&provider=cobo,lean&status=succeeded,queued,requires_action`).expect(200)).body);
    expect(rows).toEqual(
      await expectedCsvRows(`created_at >= $1 AND created_at < $2 AND provider IN ('cobo', 'lean') AND status IN ('succeeded', 'queued', 'requires_action')`, [
        from,
        to,
      ]),
    );
    expect(rows.length).toBeGreaterThan(0);

    const empty = await csv('?from=2030-01-01').expect(200);
    expect(empty.body).toBe(`${HEADER.join(',')}\r\n`);
  });

  it('answers problem+json for errors before the first byte', async () => {
    const res = await csv('?from=2025-13-45').expect(400);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(JSON.parse(res.body).code).toBe('validation_failed');
    await csv('?status=nope').expect(400);
  });

  it('the finance views have one row per refund and one per status change', async () => {
    const { rows: refunds } = await svc.db.query(
      `SELECT refund_id, merchant_fee_amount, merchant_fee_token, merchant_fee_requested_amount, provider_commission, review_flagged, payment_currency, is_final
         FROM finance_refunds ORDER BY created_at, refund_id`,
    );
    expect(refunds).toHaveLength(seeds.length);
    expect(refunds.filter((r) => r.review_flagged)).toHaveLength(1);
    const cobo = refunds.find((r) => r.merchant_fee_requested_amount !== null)!;
    expect([formatAmount(cobo.merchant_fee_amount), cobo.merchant_fee_token, formatAmount(cobo.merchant_fee_requested_amount), formatAmount(cobo.provider_commission)]).toEqual([
      '0.1',
      'TRON_USDT',
      '0.1',
      '0.35',
    ]);
    // The fee columns follow provider_details as the service updates it (generated columns).
    const { rows: updated } = await svc.db.query(
      `UPDATE refunds SET provider_details = provider_details || '{"commissionFee": "0.5", "merchantFee": {"amount": "0.2", "tokenId": "TRON_USDT"}}'
        WHERE id = $1 RETURNING merchant_fee_amount, provider_commission`,
      [cobo.refund_id],
    );
    expect([formatAmount(updated[0].merchant_fee_amount), formatAmount(updated[0].provider_commission)]).toEqual(['0.2', '0.5']);
    await svc.db.query(
      `UPDATE refunds SET provider_details = provider_details || '{"commissionFee": "0.35", "merchantFee": {"amount": "0.1", "tokenId": "TRON_USDT"}}' WHERE id = $1`,
      [cobo.refund_id],
    );
    const { rows: events } = await svc.db.query(`SELECT count(*)::int AS n, count(DISTINCT merchant_id)::int AS m FROM finance_refund_events`);
    expect(events[0]).toEqual({ n: seeds.length, m: 3 });
  });
});

describe('CSV streaming', () => {
  const BULK = 60_000;

  beforeAll(async () => {
    // A bulk merchant whose export is far bigger than the socket buffers.
    await svc.db.query(`INSERT INTO merchants (id) VALUES ('BULK')`);
    await svc.db.query(`INSERT INTO payments (provider, payment_id, merchant_id, amount, currency, status) VALUES ('lean', 'BULK-P', 'BULK', 1e15, 'AED', 'PAID')`);
    await svc.db.query(
      `INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, currency, status, reason, idempotency_key, request_hash,
                            provider_request_id, provider_refund_id, created_at, completed_at, refunded_amount)
       SELECT gen_random_uuid(), 'BULK', 'lean', 'BULK-P', (g % 1000 + 1) / 100.0, 'AED', 'succeeded', 'other', 'bulk-' || g, 'h',
              'bulk-req-' || g, 'bulk-prov-' || g, timestamptz '2025-04-01' + g * interval '1 second',
              timestamptz '2025-04-01' + g * interval '1 second', (g % 1000 + 1) / 100.0
         FROM generate_series(1, ${BULK}) g`,
    );
  });

  /** Open the export with node:http, read `firstBytes` and hand back the live response. */
  function openExport(): Promise<{ req: http.ClientRequest; res: http.IncomingMessage; first: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = http.get(`${svc.url}/v1/reports/refunds.csv?merchantId=BULK`, { headers: { Authorization: `Bearer ${finance}` } }, (res) => {
        res.once('data', (first: Buffer) => {
          res.pause();
          resolve({ req, res, first });
        });
        res.once('error', reject);
      });
      req.once('error', reject);
    });
  }

  async function exportBackends(): Promise<number> {
    const { rows } = await svc.db.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE '%FROM finance_refunds%'`,
    );
    return rows[0].n;
  }

  it('streams every row', async () => {
    const res = await csv('?merchantId=BULK').expect(200);
    const lines = (res.body as string).split('\r\n');
    expect(lines).toHaveLength(BULK + 2); // header, rows, and the empty string after the last CRLF
    expect(lines[1]).toMatch(/^[0-9a-f-]{36},BULK,lean,BULK-P,bulk-prov-1,bulk-req-1,0\.02,0\.02,AED,succeeded,,,other,,,,2025-04-01T00:00:01\.000Z,2025-04-01T00:00:01\.000Z$/);
  });

  it('a client that disconnects stops the cursor and frees the connection', async () => {
    // More disconnects than concurrent exports allowed: each must give its slot back.
    for (let i = 0; i < 6; i++) {
      const { req, first } = await openExport();
      expect(first.toString('utf8')).toMatch(/^id,merchant_id,/);
      req.destroy();
      await waitFor(async () => (await exportBackends()) === 0, 10_000, 'export backend to go away');
    }
    const res = await csv('?merchantId=M1').expect(200);
    expect(parseCsv(res.body)).toHaveLength(1 + seeds.filter((s) => s.merchant === 'M1').length);
  });

  it('a failure after the first byte destroys the socket instead of ending the file', async () => {
    const { res } = await openExport();
    // Kill the export's database connection mid-stream.
    await waitFor(async () => (await exportBackends()) === 1, 5_000, 'export backend');
    await svc.db.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%FROM finance_refunds%'`,
    );
    const outcome = await new Promise<string>((resolve) => {
      res.on('end', () => resolve('end'));
      res.on('aborted', () => resolve('aborted'));
      res.on('error', () => resolve('error'));
      res.on('close', () => resolve(res.complete ? 'end' : 'aborted'));
      res.resume();
    });
    expect(outcome).not.toBe('end');
    // The service still exports afterwards.
    await csv('?merchantId=-M3').expect(200);
  });
});
