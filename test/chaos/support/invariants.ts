import { Decimal } from 'decimal.js';
import pg from 'pg';
import { sleep } from './harness.js';
import { expectStatus, mapLimit } from './http.js';
import { FINAL_STATUSES, LoadRecorder, Payment, Provider } from './load.js';

/**
 * The money invariants of refunds-api.md §3–§5, checked against our database AND the
 * emulators' own records (their inspection endpoints), after a scenario has healed:
 *
 *  1. no accepted refund lost: every 202/200 a merchant got names a refund row with that
 *     payment and amount; no row exists that no merchant asked for, or for a request that
 *     was refused;
 *  2. every accepted refund is final;
 *  3. no refund paid twice: one provider refund per provider request id; every provider
 *     refund belongs to one of our refunds; per refund at most one paid provider refund and
 *     (no ops retries here) one provider request id;
 *  4. our outcome agrees with the provider's: succeeded ⇔ paid in full there,
 *     partially_succeeded ⇔ paid in part (same amount), failed/canceled ⇒ nothing paid there;
 *  5. no payment over-refunded: at the provider, the sum paid per payment ≤ the paid amount;
 *     ours, refunded + reserved ≤ the paid amount (SQL and GET /v1/payments);
 *  6. every recorded status change is one the state machine allows (failed → queued, the ops
 *     retry, never happens in these scenarios).
 */

export interface ProviderRefund {
  provider: Provider;
  paymentId: string;
  requestId: string;
  status: string;
  /** Money that went back to the payer (0 until paid, and for failures). */
  paid: Decimal;
  final: boolean;
}

export interface InvariantReport {
  violations: string[];
  stats: {
    accepted: number;
    rows: number;
    byStatus: Record<string, number>;
    providerRefunds: number;
    providerPaid: number;
    payments: number;
  };
}

const ALLOWED = new Set([
  'null>queued',
  'null>pending_approval',
  'pending_approval>queued',
  'pending_approval>canceled',
  'queued>processing',
  'queued>canceled',
  'processing>succeeded',
  'processing>partially_succeeded',
  'processing>failed',
  'processing>requires_action',
  'requires_action>processing',
  'requires_action>canceled',
]);

function binanceRecord(paymentId: string, r: any): ProviderRefund {
  const status = String(r.status);
  return {
    provider: 'binance_pay',
    paymentId,
    requestId: String(r.refundRequestId),
    status,
    paid: status === 'REFUND_SUCCESS' ? new Decimal(r.refundAmount) : new Decimal(0),
    final: ['REFUND_SUCCESS', 'REFUND_FAIL', 'REFUND_REJECTED'].includes(status),
  };
}

function coboRecord(paymentId: string, r: any): ProviderRefund {
  const status = String(r.status);
  const paid =
    status === 'Completed'
      ? new Decimal(r.completed_amount ?? r.payable_amount ?? r.amount)
      : status === 'PartiallyCompleted'
        ? new Decimal(r.completed_amount ?? 0)
        : new Decimal(0);
  return {
    provider: 'cobo',
    paymentId,
    requestId: String(r.request_id),
    status,
    paid,
    final: ['Completed', 'PartiallyCompleted', 'Failed'].includes(status),
  };
}

function leanRecord(paymentId: string, r: any, successStatus: string): ProviderRefund {
  const status = String(r.status);
  return {
    provider: 'lean',
    paymentId,
    requestId: String(r.external_reference),
    status,
    paid: status === successStatus ? new Decimal(r.amount) : new Decimal(0),
    final: [successStatus, 'FAILED', 'REJECTED'].includes(status),
  };
}

/** The emulators' own refund records for our payments. */
export async function providerRefunds(apiUrl: string, payments: Payment[]): Promise<ProviderRefund[]> {
  const leanFaults = await expectStatus(200, 'GET', `${apiUrl}/sandbox/lean/faults`);
  const successStatus = String(leanFaults.body.successStatus ?? 'COMPLETED');
  const lists = await mapLimit(payments, 6, async (p) => {
    if (p.provider === 'binance_pay') {
      const res = await expectStatus(200, 'GET', `${apiUrl}/sandbox/binance-pay/refunds?prepayId=${encodeURIComponent(p.paymentId)}`);
      return (res.body.data as any[]).map((r) => binanceRecord(p.paymentId, r));
    }
    if (p.provider === 'cobo') {
      const res = await expectStatus(200, 'GET', `${apiUrl}/sandbox/cobo/refunds?order_id=${encodeURIComponent(p.paymentId)}`);
      return (res.body.data as any[]).map((r) => coboRecord(p.paymentId, r));
    }
    const res = await expectStatus(200, 'GET', `${apiUrl}/sandbox/lean/refunds?payment_id=${encodeURIComponent(p.paymentId)}`);
    return (res.body.data as any[]).map((r) => leanRecord(p.paymentId, r, successStatus));
  });
  return lists.flat();
}

interface RefundRow {
  id: string;
  provider: Provider;
  payment_id: string;
  amount: string;
  refunded_amount: string;
  status: string;
  provider_request_id: string | null;
  idempotency_key: string;
  review_reason: string | null;
}

/** "kind: n, ..." of a violation list (the text before the first colon), or 0. */
export function violationKinds(violations: string[]): string | number {
  if (violations.length === 0) return 0;
  const counts: Record<string, number> = {};
  for (const v of violations) {
    const kind = v.split(':')[0]!;
    counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return `${violations.length} (${Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(', ')})`;
}

/** Waits (bounded) until no refund is non-final; returns the ms it took, or undefined on timeout. */
export async function waitAllFinal(db: pg.Pool, timeoutMs: number): Promise<number | undefined> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    try {
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM refunds WHERE status <> ALL($1::text[])`, [FINAL_STATUSES]);
      if (rows[0].n === 0) return Date.now() - started;
    } catch {
      // the database may still be coming back
    }
    await sleep(250);
  }
  return undefined;
}

/** What the non-final refunds look like (for a failure message). */
export async function describeNonFinal(db: pg.Pool, limit = 15): Promise<string> {
  const { rows } = await db.query(
    `SELECT r.id, r.provider, r.status, r.provider_state, r.attempt_count, r.check_count,
            r.next_check_at, r.lease_until, r.lease_owner, r.updated_at,
            (SELECT json_agg(json_build_object('op', a.operation, 'outcome', a.outcome, 'http', a.http_status,
                                               'code', a.provider_code, 'err', left(a.error_message, 80)) ORDER BY a.number)
               FROM refund_attempts a WHERE a.refund_id = r.id) AS attempts
       FROM refunds r WHERE r.status <> ALL($1::text[]) ORDER BY r.created_at LIMIT $2`,
    [FINAL_STATUSES, limit],
  );
  const counts = await db.query(`SELECT provider, status, count(*)::int AS n FROM refunds WHERE status <> ALL($1::text[]) GROUP BY 1, 2`, [
    FINAL_STATUSES,
  ]);
  return `non-final: ${JSON.stringify(counts.rows)}\n${rows.map((r) => JSON.stringify(r)).join('\n')}`;
}

export async function checkInvariants(opts: {
  db: pg.Pool;
  apiUrl: string;
  merchantKey: string;
  payments: Payment[];
  recorder: LoadRecorder;
  /** Refunds a scenario checks by its own rules (e.g. ops retries): skipped here. */
  exclude?: Set<string>;
}): Promise<InvariantReport> {
  const { db, apiUrl, payments, recorder } = opts;
  const excluded = opts.exclude ?? new Set<string>();
  const v: string[] = [];
  const paymentKey = (provider: string, paymentId: string) => `${provider}/${paymentId}`;

  const { rows: allRows } = await db.query<RefundRow>(
    `SELECT id, provider, payment_id, amount::text, refunded_amount::text, status, provider_request_id, idempotency_key, review_reason
       FROM refunds`,
  );
  const rows = allRows.filter((r) => !excluded.has(r.id));
  const byId = new Map(rows.map((r) => [r.id, r]));
  const byKey = new Map(rows.map((r) => [r.idempotency_key, r]));

  // 1. Nothing lost, nothing invented.
  const accepted = recorder.accepted();
  for (const { req, id } of accepted) {
    const row = byId.get(id);
    if (!row) {
      v.push(`lost: refund ${id} (key ${req.key}) was accepted but is not in the database`);
      continue;
    }
    if (row.idempotency_key !== req.key || row.payment_id !== req.paymentId || !new Decimal(row.amount).eq(req.amount)) {
      v.push(`mismatch: refund ${id} does not match its request ${req.key} (${row.payment_id} ${row.amount})`);
    }
  }
  const unanswered = new Set(recorder.byKind('unanswered').map((r) => r.key));
  const rejected = new Set(recorder.byKind('rejected').map((r) => r.key));
  const acceptedKeys = new Set(accepted.map((a) => a.req.key));
  for (const row of rows) {
    if (rejected.has(row.idempotency_key)) v.push(`phantom: refund ${row.id} exists although its create was refused`);
    else if (!acceptedKeys.has(row.idempotency_key) && !unanswered.has(row.idempotency_key)) {
      v.push(`phantom: refund ${row.id} (key ${row.idempotency_key}) was never requested`);
    }
  }
  void byKey;

  // 2. Everything final.
  const byStatus: Record<string, number> = {};
  for (const row of rows) {
    byStatus[row.status] = (byStatus[row.status] ?? 0) + 1;
    if (!FINAL_STATUSES.includes(row.status)) v.push(`not final: refund ${row.id} (${row.provider}) is ${row.status}`);
  }

  // 3. Provider request ids: which refund each belongs to.
  const attempts = await db.query<{ refund_id: string; provider_request_id: string }>(
    `SELECT DISTINCT refund_id, provider_request_id FROM refund_attempts`,
  );
  const requestOwner = new Map<string, string>();
  const idsPerRefund = new Map<string, Set<string>>();
  const own = (refundId: string, requestId: string) => {
    const prev = requestOwner.get(requestId);
    if (prev && prev !== refundId) v.push(`shared request id: ${requestId} used by refunds ${prev} and ${refundId}`);
    requestOwner.set(requestId, refundId);
    const set = idsPerRefund.get(refundId) ?? new Set<string>();
    set.add(requestId);
    idsPerRefund.set(refundId, set);
  };
  for (const a of attempts.rows) if (!excluded.has(a.refund_id)) own(a.refund_id, a.provider_request_id);
  for (const row of rows) if (row.provider_request_id) own(row.id, row.provider_request_id);
  for (const [refundId, ids] of idsPerRefund) {
    if (ids.size > 1) v.push(`new request id: refund ${refundId} used ${ids.size} provider request ids (${[...ids].join(', ')}) without an ops retry`);
  }

  const atProvider = await providerRefunds(apiUrl, payments);
  const perRequest = new Map<string, ProviderRefund[]>();
  for (const pr of atProvider) {
    const k = `${pr.provider}/${pr.requestId}`;
    perRequest.set(k, [...(perRequest.get(k) ?? []), pr]);
  }
  const paidPerRefund = new Map<string, ProviderRefund[]>();
  const recordsPerRefund = new Map<string, ProviderRefund[]>();
  for (const [k, list] of perRequest) {
    if (list.length > 1) v.push(`duplicate at provider: ${list.length} provider refunds for request id ${k}`);
    for (const pr of list) {
      const refundId = requestOwner.get(pr.requestId);
      const row = refundId ? byId.get(refundId) : undefined;
      if (!row) {
        v.push(`orphan at provider: ${pr.provider} refund for request ${pr.requestId} (${pr.status}, paid ${pr.paid}) belongs to none of our refunds`);
        continue;
      }
      if (row.payment_id !== pr.paymentId) v.push(`wrong payment: provider refund ${k} is on ${pr.paymentId}, refund ${row.id} on ${row.payment_id}`);
      recordsPerRefund.set(row.id, [...(recordsPerRefund.get(row.id) ?? []), pr]);
      if (pr.paid.gt(0)) paidPerRefund.set(row.id, [...(paidPerRefund.get(row.id) ?? []), pr]);
    }
  }

  // 4. Our outcome agrees with the provider's.
  for (const row of rows) {
    const paid = paidPerRefund.get(row.id) ?? [];
    const records = recordsPerRefund.get(row.id) ?? [];
    if (paid.length > 1) v.push(`paid twice: refund ${row.id} has ${paid.length} paid provider refunds`);
    const paidSum = paid.reduce((s, p) => s.plus(p.paid), new Decimal(0));
    if (row.status === 'succeeded' && !paidSum.eq(row.amount)) {
      v.push(`disagreement: refund ${row.id} succeeded for ${row.amount} but the provider paid ${paidSum} (${records.map((r) => r.status).join(',') || 'no record'})`);
    }
    if (row.status === 'partially_succeeded' && !paidSum.eq(row.refunded_amount)) {
      v.push(`disagreement: refund ${row.id} partially succeeded (${row.refunded_amount}) but the provider paid ${paidSum}`);
    }
    if ((row.status === 'failed' || row.status === 'canceled') && paidSum.gt(0)) {
      v.push(`disagreement: refund ${row.id} is ${row.status} but the provider paid ${paidSum}${row.review_reason ? ' (flagged for review)' : ''}`);
    }
    if (FINAL_STATUSES.includes(row.status) && records.some((r) => !r.final)) {
      v.push(`disagreement: refund ${row.id} is ${row.status} but the provider still has it ${records.map((r) => r.status).join(',')}`);
    }
    if (row.review_reason) v.push(`review flag: refund ${row.id}: ${row.review_reason}`);
  }

  // 5. No over-refund, at the provider and in our books.
  const paymentAmount = new Map(payments.map((p) => [paymentKey(p.provider, p.paymentId), new Decimal(p.amount)]));
  const providerPaid = new Map<string, Decimal>();
  for (const pr of atProvider) {
    const k = paymentKey(pr.provider, pr.paymentId);
    providerPaid.set(k, (providerPaid.get(k) ?? new Decimal(0)).plus(pr.paid));
  }
  for (const [k, sum] of providerPaid) {
    const cap = paymentAmount.get(k);
    if (cap && sum.gt(cap)) v.push(`over-refund at provider: ${k} paid ${sum} of ${cap}`);
  }
  const books = await db.query<{ provider: string; payment_id: string; amount: string; used: string }>(
    `SELECT p.provider, p.payment_id, p.amount::text,
            COALESCE(SUM(CASE WHEN r.status IN ('pending_approval','queued','processing','requires_action','succeeded') THEN r.amount
                              WHEN r.status = 'partially_succeeded' THEN r.refunded_amount ELSE 0 END), 0)::text AS used
       FROM payments p LEFT JOIN refunds r ON r.provider = p.provider AND r.payment_id = p.payment_id
      GROUP BY p.provider, p.payment_id, p.amount`,
  );
  for (const b of books.rows) {
    if (new Decimal(b.used).gt(b.amount)) v.push(`over-refund in our books: ${b.provider}/${b.payment_id} uses ${b.used} of ${b.amount}`);
    const cap = paymentAmount.get(paymentKey(b.provider, b.payment_id));
    if (cap && !cap.eq(b.amount)) v.push(`payment amount: ${b.provider}/${b.payment_id} is ${b.amount} here, ${cap} at the provider`);
  }
  await mapLimit(payments, 6, async (p) => {
    const res = await expectStatus(200, 'GET', `${apiUrl}/v1/payments/${p.provider}/${encodeURIComponent(p.paymentId)}`, {
      headers: { authorization: `Bearer ${opts.merchantKey}` },
    }).catch((err: Error) => ({ status: 0, body: { error: err.message } }));
    if (res.status !== 200) {
      // A payment no refund was accepted for may never have been looked up: fine.
      if (accepted.some((a) => a.req.paymentId === p.paymentId)) v.push(`payment view: ${p.provider}/${p.paymentId}: ${JSON.stringify(res.body).slice(0, 200)}`);
      return;
    }
    const { amount, refundedAmount, reservedAmount, refundableAmount } = res.body;
    if (new Decimal(refundedAmount).plus(reservedAmount).gt(amount) || new Decimal(refundableAmount).lt(0)) {
      v.push(`over-refund in payment view: ${p.provider}/${p.paymentId} ${JSON.stringify(res.body)}`);
    }
    const providerSum = providerPaid.get(paymentKey(p.provider, p.paymentId)) ?? new Decimal(0);
    if (!new Decimal(refundedAmount).eq(providerSum)) {
      v.push(`payment view: ${p.provider}/${p.paymentId} refundedAmount ${refundedAmount}, provider paid ${providerSum}`);
    }
  });

  // 6. Only allowed transitions.
  const events = await db.query<{ refund_id: string; from_status: string | null; to_status: string; actor: string }>(
    `SELECT refund_id, from_status, to_status, actor FROM refund_events ORDER BY id`,
  );
  for (const e of events.rows) {
    if (excluded.has(e.refund_id)) continue;
    if (!ALLOWED.has(`${e.from_status ?? 'null'}>${e.to_status}`)) {
      v.push(`transition: refund ${e.refund_id} went ${e.from_status} -> ${e.to_status} (${e.actor})`);
    }
  }

  return {
    violations: v,
    stats: {
      accepted: accepted.length,
      rows: rows.length,
      byStatus,
      providerRefunds: atProvider.length,
      providerPaid: atProvider.filter((p) => p.paid.gt(0)).length,
      payments: payments.length,
    },
  };
}
