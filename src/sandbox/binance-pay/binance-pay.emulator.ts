import { randomBytes } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { LosslessNumber } from 'lossless-json';
import { money } from '../../common/money.js';
import { Database, Sql } from '../../database/database.js';
import { binanceCertSerial } from '../../providers/binance-pay/binance-pay.signing.js';
import { SandboxCredentials } from '../sandbox-credentials.js';
import { chance, webhookDelay } from '../sandbox-faults.js';
import { CreateSandboxPayment, SandboxPayment, SandboxPaymentEmulator } from '../sandbox-payment-emulator.js';
import { SandboxStore, isUniqueViolation } from '../sandbox-store.js';
import { BinancePayFaults, parseBinancePayFaultPatch, resolveBinancePayFaults } from './binance-pay.faults.js';
import {
  BinanceCode,
  BinanceFail,
  MAX_REFUND_ATTEMPTS,
  RefundRequest,
  RefundSnapshot,
  RefundStatus,
  buildRefundWebhookBody,
  decideRefund,
  fixed8,
  isSameRefundRequest,
  orderStatusFromRefunds,
  randomDigits,
  refundResultData,
} from './binance-pay.rules.js';

export const BINANCE_PAY_PROVIDER = 'binance_pay';

interface OrderRow {
  prepay_id: string;
  merchant_trade_no: string;
  transaction_id: string;
  currency: string;
  order_amount: string;
  status: string;
  open_user_id: string;
  pass_through_info: string;
  refunded_amount: string;
  pending_amount: string;
  remaining_attempts: number;
  transact_time: Date | null;
  created_at: Date;
}

interface RefundRow {
  refund_id: string;
  refund_request_id: string;
  prepay_id: string;
  requested_amount: string;
  refund_amount: string;
  refunded_amount_after: string;
  remaining_attempts_after: number;
  status: RefundStatus;
  will_fail: boolean;
  settle_at: Date;
  settled_at: Date | null;
  refund_reason: string | null;
  webhook_url: string | null;
  created_at: Date;
}

/** A webhook row settleDueInTx() inserts. */
interface WebhookInsert {
  refund: RefundRow;
  bizStatus: string;
  body: string;
  status: 'PENDING' | 'DROPPED';
  delayMs: number;
}

interface WebhookRow {
  id: string;
  refund_request_id: string;
  prepay_id: string;
  url: string;
  biz_status: string;
  status: string;
  attempts: number;
  next_attempt_at: Date;
  last_error: string | null;
  delivered_at: Date | null;
  created_at: Date;
}

/** Statuses `POST /sandbox/payments` may seed an order in; PAID is the default. */
const PAYMENT_STATUSES = ['PAID', 'INITIAL', 'EXPIRED', 'CANCELED'] as const;

/** The order's columns a refund's answer shows (currentSnapshot()). */
type SnapshotOrder = Pick<OrderRow, 'prepay_id' | 'order_amount' | 'open_user_id' | 'refunded_amount' | 'pending_amount' | 'remaining_attempts'>;

/** Non-failed refunds of the order: what the RefundResult calls refundedAmount. */
function reservedOf(order: Pick<OrderRow, 'refunded_amount' | 'pending_amount'>) {
  return money(order.refunded_amount).plus(order.pending_amount);
}

/**
 * The Binance Pay emulator's state and rules over Postgres. Every change to an order's
 * refunds happens with that order's row locked (SELECT ... FOR UPDATE), which serialises
 * concurrent refunds of one order across all processes; the unique refund_request_id and
 * the CHECK on the order's amounts are the backstops.
 */
@Injectable()
export class BinancePayEmulator implements SandboxPaymentEmulator {
  readonly provider = BINANCE_PAY_PROVIDER;
  readonly paymentStatuses = PAYMENT_STATUSES;

  constructor(
    private readonly store: SandboxStore,
    private readonly credentials: SandboxCredentials,
  ) {}

  private get db() {
    return this.store.db;
  }

  // --- faults ------------------------------------------------------------------------------

  /** `db`: the background pool, for the settlement loop. */
  async faults(db?: Database): Promise<BinancePayFaults> {
    return resolveBinancePayFaults(await this.store.faults(BINANCE_PAY_PROVIDER, db));
  }

  /** Validates (throws FaultValidationError) and merges a partial update. */
  async patchFaults(body: unknown): Promise<BinancePayFaults> {
    const patch = parseBinancePayFaultPatch(body);
    return resolveBinancePayFaults(await this.store.patchFaults(BINANCE_PAY_PROVIDER, patch));
  }

  async resetFaults(): Promise<BinancePayFaults> {
    await this.store.resetFaults(BINANCE_PAY_PROVIDER);
    return this.faults();
  }

  /** Faults injected so far, by kind (every process serving the emulator counts into Postgres). */
  injected(): Promise<Record<string, number>> {
    return this.store.injections(BINANCE_PAY_PROVIDER);
  }

  resetInjected(): Promise<void> {
    return this.store.resetInjections(BINANCE_PAY_PROVIDER);
  }

  /** Counts an injected fault (best effort, not awaited). */
  countInjection(kind: string, n = 1): void {
    this.store.countInjection(BINANCE_PAY_PROVIDER, kind, n);
  }

  // --- seeded payments ---------------------------------------------------------------------

  async createPayment(input: CreateSandboxPayment): Promise<SandboxPayment> {
    const status = input.status ?? 'PAID';
    // Ids are random; a collision is astronomically unlikely but costs only another try.
    for (let attempt = 0; attempt < 5; attempt++) {
      const rows = await this.db.query<OrderRow>(
        `INSERT INTO sandbox.binance_orders
           (prepay_id, merchant_trade_no, transaction_id, currency, order_amount, status, open_user_id, transact_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'PAID' THEN now() END)
         ON CONFLICT DO NOTHING
         RETURNING *`,
        [
          // A Java long on Binance's side: 19 digits, first one at most 8 to stay below 2^63.
          randomDigits(19, 8),
          `sbx${randomBytes(12).toString('hex')}`,
          `M_P_${randomDigits(17)}`,
          input.currency,
          input.amount,
          status,
          randomBytes(16).toString('hex'),
        ],
      );
      if (rows[0]) return this.toPayment(rows[0]);
    }
    throw new Error('could not allocate a unique prepayId');
  }

  async listPayments(limit: number): Promise<SandboxPayment[]> {
    const rows = await this.db.query<OrderRow>(
      'SELECT * FROM sandbox.binance_orders ORDER BY created_at DESC, prepay_id LIMIT $1',
      [limit],
    );
    return rows.map((row) => this.toPayment(row));
  }

  private toPayment(row: OrderRow): SandboxPayment {
    return {
      provider: BINANCE_PAY_PROVIDER,
      paymentId: row.prepay_id,
      amount: fixed8(row.order_amount),
      currency: row.currency,
      status: row.status,
      createdAt: row.created_at,
    };
  }

  // --- merchant API ------------------------------------------------------------------------

  /** `POST /binancepay/openapi/order/refund`: returns RefundResult `data`, or throws BinanceFail. */
  async refund(req: RefundRequest, faults: BinancePayFaults): Promise<Record<string, unknown>> {
    for (let attempt = 0; ; attempt++) {
      try {
        // Nearly every refund takes two statements (refundFast); anything unusual, and every
        // retry, the transaction under the order's row lock.
        const fast = attempt === 0 ? await this.refundFast(req, faults) : undefined;
        if (fast) return fast;
        return await this.db.transaction((tx) => this.refundInTx(tx, req, faults));
      } catch (err) {
        // Two first requests with one refundRequestId on different orders (so not serialised by
        // the order lock) meet at the unique index; the retry then sees the winner as a duplicate.
        // A deadlock with the settle loop is Postgres's business, not the merchant's: retry it too.
        const deadlock = (err as { code?: string })?.code === '40P01';
        if ((!isUniqueViolation(err) && !deadlock) || attempt >= 3) throw err;
      }
    }
  }

  /**
   * A new refund without a transaction: one read, the same decision as refundInTx(), then one
   * statement that moves the order's amounts only if the order is still as read, and inserts
   * the refund only if it did. When the order changed in between (another refund, a
   * settlement), nothing is written and the locked path decides afresh; a twin request that
   * got in first fails the insert on the unique refundRequestId, and the retry answers it as a
   * duplicate. Refunds due to settle that will succeed are left to the loop or their query:
   * settling them first changes neither what is reserved nor the attempts left, so an
   * accepted refund gets the same answer; a refusal, or a due refund that will fail (and
   * free its amount), goes to the locked path, which settles first. Returns undefined when
   * the locked path must decide (also for a replay and an unknown order). Two statements
   * instead of eight: the benchmark runs this emulator on the machine it measures
   * (docs/performance.md).
   */
  private async refundFast(req: RefundRequest, faults: BinancePayFaults): Promise<Record<string, unknown> | undefined> {
    const [order] = await this.db.query<OrderRow & { taken: boolean; due: boolean; due_failing: boolean }>(
      `SELECT o.*, d.due, d.due_failing,
              EXISTS (SELECT 1 FROM sandbox.binance_refunds r WHERE r.refund_request_id = $2) AS taken
         FROM sandbox.binance_orders o,
              LATERAL (SELECT count(*) > 0 AS due, coalesce(bool_or(r.will_fail), false) AS due_failing
                         FROM sandbox.binance_refunds r
                        WHERE o.pending_amount > 0 AND r.prepay_id = o.prepay_id
                          AND r.status = 'REFUND_PENDING' AND r.settle_at <= now()) d
        WHERE o.prepay_id = $1`,
      [req.prepayId, req.refundRequestId],
    );
    if (!order || order.taken || order.due_failing) return undefined;
    const reserved = reservedOf(order);
    let decision: ReturnType<typeof decideRefund>;
    try {
      decision = decideRefund(
        { status: order.status, orderAmount: money(order.order_amount), reserved, remainingAttempts: order.remaining_attempts },
        req.refundAmount,
        faults.insufficientBalance,
      );
    } catch (err) {
      // Settling first may change which refusal applies (a fully refunded order's status).
      if (order.due) return undefined;
      throw err;
    }
    const [refund] = await this.db.query<RefundRow>(
      `WITH o AS (
         UPDATE sandbox.binance_orders
            SET pending_amount = pending_amount + $5, remaining_attempts = $7, status = 'REFUNDING'
          WHERE prepay_id = $3 AND status = $12 AND refunded_amount = $13 AND pending_amount = $14 AND remaining_attempts = $15
          RETURNING prepay_id)
       INSERT INTO sandbox.binance_refunds
         (refund_id, refund_request_id, prepay_id, requested_amount, refund_amount, refunded_amount_after,
          remaining_attempts_after, status, will_fail, settle_at, refund_reason, webhook_url)
       SELECT $1, $2, o.prepay_id, $4, $5, $6, $7, 'REFUND_PENDING', $8, now() + $9 * interval '1 millisecond', $10, $11 FROM o
       RETURNING *`,
      [
        ...this.newRefundValues(req, order, decision, reserved, faults),
        order.status,
        order.refunded_amount,
        order.pending_amount,
        order.remaining_attempts,
      ],
    );
    if (!refund) return undefined;
    return refundResultData({ ...this.storedSnapshot(refund, order), duplicate: false });
  }

  /** The first eleven parameters of a refund row insert (refundFast() and refundInTx()). */
  private newRefundValues(
    req: RefundRequest,
    order: OrderRow,
    decision: { amount: ReturnType<typeof money>; remainingAttempts: number },
    reserved: ReturnType<typeof money>,
    faults: BinancePayFaults,
  ): unknown[] {
    return [
      // 18 digits: above 2^53 on purpose, like Binance's refundId (a Java long).
      randomDigits(18),
      req.refundRequestId,
      order.prepay_id,
      req.refundAmount.toFixed(),
      decision.amount.toFixed(),
      reserved.plus(decision.amount).toFixed(),
      decision.remainingAttempts,
      chance(faults.refundFailRate),
      faults.settleAfterMs,
      req.refundReason ?? null,
      req.webhookUrl ?? null,
    ];
  }

  private async refundInTx(tx: Sql, req: RefundRequest, faults: BinancePayFaults): Promise<Record<string, unknown>> {
    const [locked] = await tx.query<OrderRow>('SELECT * FROM sandbox.binance_orders WHERE prepay_id = $1 FOR UPDATE', [
      req.prepayId,
    ]);
    // Read after taking the lock, so a concurrent twin that held it has committed its row.
    const [existing] = await tx.query<RefundRow>('SELECT * FROM sandbox.binance_refunds WHERE refund_request_id = $1', [
      req.refundRequestId,
    ]);
    if (existing) {
      const same = isSameRefundRequest(
        { prepayId: existing.prepay_id, requestedAmount: money(existing.requested_amount) },
        req,
      );
      if (!same && faults.duplicateMismatch === 'reject') {
        throw new BinanceFail(
          BinanceCode.INVALID_PARAM_WRONG_VALUE,
          'refundRequestId was already used for a refund with another amount or prepayId.',
        );
      }
      const order =
        locked?.prepay_id === existing.prepay_id
          ? locked
          : (await tx.query<OrderRow>('SELECT * FROM sandbox.binance_orders WHERE prepay_id = $1', [existing.prepay_id]))[0]!;
      // The stored result, as first answered, flagged as a duplicate.
      return refundResultData({ ...this.storedSnapshot(existing, order), duplicate: true });
    }
    if (!locked) throw new BinanceFail(BinanceCode.ORDER_NOT_FOUND, 'Order not found.');

    // Settle what is due first, so a refund that has just failed frees its amount.
    const order = await this.settleOneDueInTx(tx, locked, faults);
    const reserved = reservedOf(order);
    const decision = decideRefund(
      {
        status: order.status,
        orderAmount: money(order.order_amount),
        reserved,
        remainingAttempts: order.remaining_attempts,
      },
      req.refundAmount,
      faults.insufficientBalance,
    );
    const [refund] = await tx.query<RefundRow>(
      `INSERT INTO sandbox.binance_refunds
         (refund_id, refund_request_id, prepay_id, requested_amount, refund_amount, refunded_amount_after,
          remaining_attempts_after, status, will_fail, settle_at, refund_reason, webhook_url)
       VALUES ($1, $2, $3, $4, $5, $6, $7, 'REFUND_PENDING', $8, now() + $9 * interval '1 millisecond', $10, $11)
       RETURNING *`,
      this.newRefundValues(req, order, decision, reserved, faults),
    );
    await tx.query(
      `UPDATE sandbox.binance_orders
          SET pending_amount = pending_amount + $2, remaining_attempts = $3, status = 'REFUNDING'
        WHERE prepay_id = $1`,
      [order.prepay_id, decision.amount.toFixed(), decision.remainingAttempts],
    );
    return refundResultData({ ...this.storedSnapshot(refund!, order), duplicate: false });
  }

  /** `POST /binancepay/openapi/order/refund/query`. */
  async queryRefund(refundRequestId: string, faults: BinancePayFaults): Promise<Record<string, unknown>> {
    let found = await this.findRefundWithOrder(refundRequestId);
    // The real code for an unknown refundRequestId is undocumented ([UNKNOWN] in providers.md);
    // ORDER_NOT_FOUND is the closest documented one, and clients treat it as "not found".
    if (!found) throw new BinanceFail(BinanceCode.ORDER_NOT_FOUND, 'Refund not found.');
    if (found.row.status === 'REFUND_PENDING' && found.due) {
      // Settle lazily so callers see the final state on time even if no loop ran yet.
      await this.settleOrder(found.row.prepay_id, faults);
      found = (await this.findRefundWithOrder(refundRequestId))!;
    }
    return {
      ...refundResultData(this.currentSnapshot(found.row, found.order)),
      refundStatus: found.row.status,
      refundCommission: fixed8('0'),
      refundedCommission: fixed8('0'),
    };
  }

  /** `POST /binancepay/openapi/v2/order/query`. */
  async queryOrder(
    query: { prepayId: string } | { merchantTradeNo: string },
    faults: BinancePayFaults,
  ): Promise<Record<string, unknown>> {
    let order = await this.findOrder(query);
    if (!order) throw new BinanceFail(BinanceCode.ORDER_NOT_FOUND, 'Order not found.');
    if (order.status === 'REFUNDING') {
      await this.settleOrder(order.prepay_id, faults);
      order = (await this.findOrder({ prepayId: order.prepay_id }))!;
    }
    const merchant = await this.credentials.binancePayMerchant();
    return {
      merchantId: merchant.merchantId,
      prepayId: order.prepay_id,
      transactionId: order.transaction_id,
      merchantTradeNo: order.merchant_trade_no,
      currency: order.currency,
      orderAmount: fixed8(order.order_amount),
      openUserId: order.open_user_id,
      passThroughInfo: order.pass_through_info,
      commission: new LosslessNumber('0'),
      transactTime: order.transact_time ? order.transact_time.getTime() : null,
      createTime: order.created_at.getTime(),
      status: order.status,
    };
  }

  /** `POST /binancepay/openapi/certificates`: the key that signs webhooks. */
  async certificates(): Promise<Array<{ certSerial: string; certPublic: string }>> {
    const merchant = await this.credentials.binancePayMerchant();
    return [{ certSerial: binanceCertSerial(merchant.webhookPublicKeyPem), certPublic: merchant.webhookPublicKeyPem }];
  }

  // --- settlement --------------------------------------------------------------------------

  /**
   * Settles up to `limit` due pending refunds whose orders no one else holds, earliest first,
   * and any others due on those orders, in one transaction; returns how many due refunds it
   * took (`limit`: there may be more). Orders locked elsewhere (another process's batch, a
   * refund or query settling them) are skipped, not waited for, so processes share the work.
   * BEGIN, three statements and COMMIT for the batch (after a probe and the fault settings),
   * not five statements per order: under load the per-order loop fell so far behind that
   * nearly every refund was settled by its query instead, and its webhook was queued only
   * then, after the caller already knew the outcome (docs/performance.md, round 12).
   */
  async settleAllDue(limit: number): Promise<number> {
    // The loop's own connections (SandboxStore.background), not the pool the API calls wait for.
    const db = this.store.background;
    const [anyDue] = await db.query<{ found: number }>(
      `SELECT 1 AS found FROM sandbox.binance_refunds WHERE status = 'REFUND_PENDING' AND settle_at <= now() LIMIT 1`,
    );
    if (!anyDue) return 0;
    // Read before the transaction: a second pool connection taken while holding one could
    // starve the pool when many transactions wait on the same order lock.
    const faults = await this.faults(db);
    return db.transaction(async (tx) => {
      // One row per due refund taken, its order locked (an order's row once, however many).
      const taken = await tx.query<OrderRow>(
        `SELECT o.* FROM sandbox.binance_refunds r JOIN sandbox.binance_orders o ON o.prepay_id = r.prepay_id
          WHERE r.status = 'REFUND_PENDING' AND r.settle_at <= now()
          ORDER BY r.settle_at LIMIT $1
          FOR UPDATE OF o SKIP LOCKED`,
        [limit],
      );
      const orders = [...new Map(taken.map((o) => [o.prepay_id, o])).values()];
      await this.settleDueInTx(tx, orders, faults);
      return taken.length;
    });
  }

  /** Settles the order's due refunds under its row lock (waiting for it). */
  async settleOrder(prepayId: string, knownFaults?: BinancePayFaults): Promise<void> {
    // Read before the transaction: a second pool connection taken while holding one could
    // starve the pool when many transactions wait on the same order lock.
    const faults = knownFaults ?? (await this.faults());
    await this.db.transaction(async (tx) => {
      const locked = await tx.query<OrderRow>('SELECT * FROM sandbox.binance_orders WHERE prepay_id = $1 FOR UPDATE', [prepayId]);
      await this.settleDueInTx(tx, locked, faults);
    });
  }

  /** settleDueInTx() of one locked order: the order as it stands afterwards. */
  private async settleOneDueInTx(tx: Sql, order: OrderRow, faults: BinancePayFaults): Promise<OrderRow> {
    return (await this.settleDueInTx(tx, [order], faults)).get(order.prepay_id) ?? order;
  }

  /**
   * Moves the locked orders' due REFUND_PENDING refunds to their decided final status,
   * updates the orders and queues their webhooks in the same transaction, so exactly one
   * process settles each refund and queues its webhook once. Two statements however many
   * orders. Returns the orders whose refunds it settled, as updated, by prepay_id.
   */
  private async settleDueInTx(tx: Sql, orders: readonly OrderRow[], faults: BinancePayFaults): Promise<Map<string, OrderRow>> {
    const updated = new Map<string, OrderRow>();
    if (orders.length === 0) return updated;
    // One statement settles the due refunds and sums each order's refunds as they stand after
    // it: the statement cannot read its own update, so the settled rows are laid over what it
    // reads. The orders are locked by the caller, so nothing else changes their refunds meanwhile.
    const settled = await tx.query<RefundRow & { succeeded: string; pending: string; pending_count: number }>(
      `WITH s AS (
         UPDATE sandbox.binance_refunds
            SET status = CASE WHEN will_fail THEN 'REFUND_FAIL' ELSE 'REFUND_SUCCESS' END, settled_at = now()
          WHERE prepay_id = ANY($1::text[]) AND status = 'REFUND_PENDING' AND settle_at <= now()
          RETURNING *),
       t AS (
         SELECT x.prepay_id,
                coalesce(sum(x.refund_amount) FILTER (WHERE x.status = 'REFUND_SUCCESS'), 0) AS succeeded,
                coalesce(sum(x.refund_amount) FILTER (WHERE x.status = 'REFUND_PENDING'), 0) AS pending,
                (count(*) FILTER (WHERE x.status = 'REFUND_PENDING'))::int AS pending_count
           FROM (SELECT r.prepay_id, r.refund_amount, coalesce(s.status, r.status) AS status
                   FROM sandbox.binance_refunds r LEFT JOIN s ON s.refund_id = r.refund_id
                  WHERE r.prepay_id = ANY($1::text[])) x
          GROUP BY x.prepay_id)
       SELECT s.*, t.succeeded, t.pending, t.pending_count FROM s JOIN t ON t.prepay_id = s.prepay_id`,
      [orders.map((o) => o.prepay_id)],
    );
    if (settled.length === 0) return updated;

    const byOrder = new Map<string, typeof settled>();
    for (const row of settled) {
      const rows = byOrder.get(row.prepay_id);
      if (rows) rows.push(row);
      else byOrder.set(row.prepay_id, [row]);
    }
    const changes: Array<{ prepayId: string; succeeded: string; pending: string; status: string }> = [];
    const hooks: WebhookInsert[] = [];
    for (const order of orders) {
      const rows = byOrder.get(order.prepay_id);
      if (!rows) continue;
      const sums = rows[0]!;
      const status = orderStatusFromRefunds(money(order.order_amount), money(sums.succeeded), sums.pending_count);
      changes.push({ prepayId: order.prepay_id, succeeded: sums.succeeded, pending: sums.pending, status });
      // The order as the next statement leaves it, which the webhooks describe (settling changes
      // only its amounts and status).
      const after: OrderRow = { ...order, refunded_amount: sums.succeeded, pending_amount: sums.pending, status };
      for (const refund of rows.sort((a, b) => a.created_at.getTime() - b.created_at.getTime())) {
        if (refund.webhook_url) hooks.push(...this.webhooksFor(refund, after, faults));
      }
    }
    // The orders' new amounts and the webhooks, in one statement.
    const rows = await tx.query<OrderRow>(
      `WITH w AS (
         INSERT INTO sandbox.binance_webhooks
           (refund_id, refund_request_id, prepay_id, url, biz_status, body, status, next_attempt_at)
         SELECT h.refund_id, h.refund_request_id, h.prepay_id, h.url, h.biz_status, h.body, h.status,
                now() + h.delay_ms * interval '1 millisecond'
           FROM unnest($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::double precision[])
                WITH ORDINALITY AS h(refund_id, refund_request_id, prepay_id, url, biz_status, body, status, delay_ms, ord)
          ORDER BY h.ord)
       UPDATE sandbox.binance_orders o
          SET refunded_amount = v.succeeded, pending_amount = v.pending, status = v.status
         FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::text[]) AS v(prepay_id, succeeded, pending, status)
        WHERE o.prepay_id = v.prepay_id
       RETURNING o.*`,
      [
        changes.map((c) => c.prepayId),
        changes.map((c) => c.succeeded),
        changes.map((c) => c.pending),
        changes.map((c) => c.status),
        hooks.map((h) => h.refund.refund_id),
        hooks.map((h) => h.refund.refund_request_id),
        hooks.map((h) => h.refund.prepay_id),
        hooks.map((h) => h.refund.webhook_url),
        hooks.map((h) => h.bizStatus),
        hooks.map((h) => h.body),
        hooks.map((h) => h.status),
        hooks.map((h) => h.delayMs),
      ],
    );
    for (const row of rows) updated.set(row.prepay_id, row);
    return updated;
  }

  /** The webhook rows of a settled refund (none, one, or two under the duplicate fault). */
  private webhooksFor(refund: RefundRow, order: OrderRow, faults: BinancePayFaults): WebhookInsert[] {
    const finalStatus = refund.status === 'REFUND_SUCCESS' ? 'REFUND_SUCCESS' : 'REFUND_FAIL';
    const body = buildRefundWebhookBody({
      prepayId: order.prepay_id,
      merchantTradeNo: order.merchant_trade_no,
      orderAmount: order.order_amount,
      currency: order.currency,
      transactTime: (refund.settled_at ?? new Date()).getTime(),
      openUserId: order.open_user_id,
      refundStatus: finalStatus,
      refund: { ...this.currentSnapshot(refund, order), duplicate: false },
    });
    const bizStatus = finalStatus === 'REFUND_SUCCESS' ? 'REFUND_SUCCESS' : 'REFUND_REJECTED';
    // Dropped webhooks keep a row (never sent) so tests can see the fault was applied.
    const dropped = chance(faults.dropWebhookRate);
    const copies = dropped ? 1 : chance(faults.duplicateWebhookRate) ? 2 : 1;
    this.countWebhookFaults(faults, dropped, copies);
    return Array.from({ length: copies }, () => ({
      refund,
      bizStatus,
      body,
      status: dropped ? 'DROPPED' : 'PENDING',
      delayMs: webhookDelay(faults),
    }));
  }

  private countWebhookFaults(faults: BinancePayFaults, dropped: boolean, copies: number): void {
    if (dropped) this.countInjection('webhook_dropped');
    if (copies > 1) this.countInjection('webhook_duplicated');
    if (!dropped && faults.webhookDelayMs > 0) this.countInjection('webhook_delayed', copies);
    if (!dropped && faults.webhookJitterMs > 0) this.countInjection('webhook_jittered', copies);
  }

  // --- snapshots ---------------------------------------------------------------------------

  /** The RefundResult as answered when the refund was created. */
  private storedSnapshot(refund: RefundRow, order: OrderRow): Omit<RefundSnapshot, 'duplicate'> {
    return {
      refundId: refund.refund_id,
      refundRequestId: refund.refund_request_id,
      prepayId: refund.prepay_id,
      orderAmount: order.order_amount,
      refundedAmount: refund.refunded_amount_after,
      refundAmount: refund.refund_amount,
      remainingAttempts: refund.remaining_attempts_after,
      payerOpenId: order.open_user_id,
    };
  }

  /** The RefundResult as of now: refundedAmount counts the order's non-failed refunds today. */
  private currentSnapshot(refund: RefundRow, order: SnapshotOrder): RefundSnapshot {
    return {
      refundId: refund.refund_id,
      refundRequestId: refund.refund_request_id,
      prepayId: refund.prepay_id,
      orderAmount: order.order_amount,
      refundedAmount: reservedOf(order).toFixed(),
      refundAmount: refund.refund_amount,
      remainingAttempts: order.remaining_attempts,
      payerOpenId: order.open_user_id,
      duplicate: false,
    };
  }

  // --- reads -------------------------------------------------------------------------------

  /** The refund, whether it is due to settle, and the order's columns its answer shows, in one read. */
  private async findRefundWithOrder(refundRequestId: string): Promise<{ row: RefundRow; due: boolean; order: SnapshotOrder } | undefined> {
    const found = await this.db.one<RefundRow & { due: boolean; order: SnapshotOrder }>(
      `SELECT r.*, r.settle_at <= now() AS due,
              json_build_object('prepay_id', o.prepay_id, 'order_amount', o.order_amount::text, 'open_user_id', o.open_user_id,
                                'refunded_amount', o.refunded_amount::text, 'pending_amount', o.pending_amount::text,
                                'remaining_attempts', o.remaining_attempts) AS "order"
         FROM sandbox.binance_refunds r JOIN sandbox.binance_orders o ON o.prepay_id = r.prepay_id
        WHERE r.refund_request_id = $1`,
      [refundRequestId],
    );
    if (!found) return undefined;
    const { due, order, ...row } = found;
    // Amounts come as text: they stay decimal strings.
    return { row, due, order };
  }

  private findOrder(query: { prepayId: string } | { merchantTradeNo: string }): Promise<OrderRow | undefined> {
    return 'prepayId' in query
      ? this.db.one<OrderRow>('SELECT * FROM sandbox.binance_orders WHERE prepay_id = $1', [query.prepayId])
      : this.db.one<OrderRow>('SELECT * FROM sandbox.binance_orders WHERE merchant_trade_no = $1', [query.merchantTradeNo]);
  }

  // --- inspection (the emulator's own records, for tests) ----------------------------------

  async inspectRefunds(prepayId?: string): Promise<Array<Record<string, unknown>>> {
    if (prepayId) await this.settleOrder(prepayId);
    const rows = prepayId
      ? await this.db.query<RefundRow>(
          'SELECT * FROM sandbox.binance_refunds WHERE prepay_id = $1 ORDER BY created_at, refund_id',
          [prepayId],
        )
      : await this.db.query<RefundRow>('SELECT * FROM sandbox.binance_refunds ORDER BY created_at DESC LIMIT 100');
    return rows.map((r) => ({
      refundRequestId: r.refund_request_id,
      refundId: r.refund_id,
      prepayId: r.prepay_id,
      requestedAmount: fixed8(r.requested_amount),
      refundAmount: fixed8(r.refund_amount),
      status: r.status,
      webhookUrl: r.webhook_url,
      createdAt: r.created_at.toISOString(),
      settledAt: r.settled_at?.toISOString() ?? null,
    }));
  }

  async inspectOrder(prepayId: string): Promise<Record<string, unknown> | undefined> {
    await this.settleOrder(prepayId);
    const order = await this.findOrder({ prepayId });
    if (!order) return undefined;
    return {
      prepayId: order.prepay_id,
      merchantTradeNo: order.merchant_trade_no,
      currency: order.currency,
      orderAmount: fixed8(order.order_amount),
      status: order.status,
      refundedAmount: fixed8(order.refunded_amount),
      pendingAmount: fixed8(order.pending_amount),
      remainingAttempts: order.remaining_attempts,
      maxAttempts: MAX_REFUND_ATTEMPTS,
      createdAt: order.created_at.toISOString(),
    };
  }

  async inspectWebhooks(prepayId?: string): Promise<Array<Record<string, unknown>>> {
    const rows = prepayId
      ? await this.db.query<WebhookRow>('SELECT * FROM sandbox.binance_webhooks WHERE prepay_id = $1 ORDER BY id', [
          prepayId,
        ])
      : await this.db.query<WebhookRow>('SELECT * FROM sandbox.binance_webhooks ORDER BY id DESC LIMIT 100');
    return rows.map((w) => ({
      id: w.id,
      refundRequestId: w.refund_request_id,
      prepayId: w.prepay_id,
      url: w.url,
      bizStatus: w.biz_status,
      status: w.status,
      attempts: w.attempts,
      lastError: w.last_error,
      deliveredAt: w.delivered_at?.toISOString() ?? null,
      createdAt: w.created_at.toISOString(),
    }));
  }
}
