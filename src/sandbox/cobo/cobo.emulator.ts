import { randomInt, randomUUID } from 'node:crypto';
import { Inject, Injectable, Optional } from '@nestjs/common';
import { Money, formatAmount, money } from '../../common/money.js';
import { Sql } from '../../database/database.js';
import { chance, webhookDelay } from '../sandbox-faults.js';
import { SandboxBadRequest } from '../sandbox-http.js';
import { CreateSandboxPayment, SandboxPayment, SandboxPaymentEmulator } from '../sandbox-payment-emulator.js';
import { SandboxStore, isUniqueViolation } from '../sandbox-store.js';
import { SANDBOX_OPTIONS, SandboxOptions } from '../sandbox-options.js';
import { CoboFaults, parseCoboFaultPatch, resolveCoboFaults } from './cobo.faults.js';
import {
  CANCELED_REASON,
  COBO_TOKENS,
  CoboCode,
  CoboError,
  CreateRefundRequest,
  DEFAULT_TOKEN,
  LifecycleState,
  ListRefundsQuery,
  OrderRecord,
  RefundOutcome,
  RefundRecord,
  RefundStatus,
  advanceLifecycle,
  decideOutcome,
  encodeCursor,
  hotWallet,
  isBeforeProcessing,
  orderView,
  refundView,
  releasedAmount,
} from './cobo.rules.js';

export const COBO_PROVIDER = 'cobo';
export const DEFAULT_MERCHANT_ID = 'M1001';

/** The developer fee Cobo charges per refund, in USD ([INF]: a fixed sandbox value). */
const SANDBOX_COMMISSION_FEE = '0.1';

/** Statuses `POST /sandbox/payments` may seed an order in; Completed is the default. */
const PAYMENT_STATUSES = ['Completed', 'Pending', 'Expired', 'Underpaid'] as const;
const MERCHANT_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Refunds advanced lazily per list call, and per loop tick. */
const LAZY_ADVANCE_LIMIT = 100;

interface OrderRow extends OrderRecord {
  reserved_amount: string;
}

interface RefundRow extends RefundRecord {
  seq: string;
  outcome: RefundOutcome | null;
  completed_amount: string | null;
  due_at: Date | null;
  settle_at: Date | null;
}

interface WebhookRow {
  id: string;
  event_id: string;
  refund_id: string;
  order_id: string | null;
  url: string;
  refund_status: string;
  created_ms: string;
  status: string;
  attempts: number;
  last_error: string | null;
  delivered_at: Date | null;
  created_at: Date;
}

/** YYYYMMDD in UTC, the date part of Cobo's ids (R20250304-M1001-1001). */
function idDate(d: Date): string {
  return d.toISOString().slice(0, 10).replaceAll('-', '');
}

function stateOf(row: RefundRow): LifecycleState {
  return {
    status: row.status,
    outcome: row.outcome,
    amount: row.amount,
    tokenId: row.token_id,
    toAddress: row.to_address,
    transactions: row.transactions,
    completedAmount: row.completed_amount,
    failedReason: row.failed_reason,
    dueAt: row.due_at?.getTime() ?? null,
    settleAt: row.settle_at?.getTime() ?? null,
    updatedAt: row.updated_at.getTime(),
  };
}

function withState(row: RefundRow, s: LifecycleState): RefundRow {
  return {
    ...row,
    status: s.status,
    outcome: s.outcome,
    to_address: s.toAddress,
    transactions: s.transactions,
    completed_amount: s.completedAmount,
    failed_reason: s.failedReason,
    due_at: s.dueAt === null ? null : new Date(s.dueAt),
    settle_at: s.settleAt === null ? null : new Date(s.settleAt),
    updated_at: new Date(s.updatedAt),
  };
}

const notFound = (what: string) => new CoboError(404, CoboCode.NOT_FOUND, `${what} not found.`);

/**
 * The Cobo emulator's state and rules over Postgres. A refund of an order is created with
 * that order's row locked (SELECT ... FOR UPDATE), which serialises concurrent refunds of
 * one order across all processes; the order's reserved_amount CHECK and the unique
 * request_id are the backstops. Lifecycle steps lock the refund row; the ones that release
 * money then update the order (never the other way round, so no lock cycle).
 *
 * Lifecycle times use this process's clock (Date.now()), passed explicitly into SQL.
 */
@Injectable()
export class CoboEmulator implements SandboxPaymentEmulator {
  readonly provider = COBO_PROVIDER;
  readonly paymentStatuses = PAYMENT_STATUSES;
  readonly paymentFields = ['tokenId', 'merchantId'] as const;

  constructor(
    private readonly store: SandboxStore,
    @Optional() @Inject(SANDBOX_OPTIONS) private readonly options?: SandboxOptions,
  ) {}

  private get db() {
    return this.store.db;
  }

  // --- faults ------------------------------------------------------------------------------

  async faults(): Promise<CoboFaults> {
    return resolveCoboFaults(await this.store.faults(COBO_PROVIDER));
  }

  /** Validates (throws FaultValidationError) and merges a partial update. */
  async patchFaults(body: unknown): Promise<CoboFaults> {
    const patch = parseCoboFaultPatch(body);
    return resolveCoboFaults(await this.store.patchFaults(COBO_PROVIDER, patch));
  }

  async resetFaults(): Promise<CoboFaults> {
    await this.store.resetFaults(COBO_PROVIDER);
    return this.faults();
  }

  /** Faults injected so far, by kind (every process serving the emulator counts into Postgres). */
  injected(): Promise<Record<string, number>> {
    return this.store.injections(COBO_PROVIDER);
  }

  resetInjected(): Promise<void> {
    return this.store.resetInjections(COBO_PROVIDER);
  }

  /** Counts an injected fault (best effort, not awaited). */
  countInjection(kind: string, n = 1): void {
    this.store.countInjection(COBO_PROVIDER, kind, n);
  }

  // --- seeded pay-in orders ------------------------------------------------------------------

  async createPayment(input: CreateSandboxPayment): Promise<SandboxPayment> {
    const currency = input.currency;
    if (currency !== 'USDT' && currency !== 'USDC') throw new SandboxBadRequest('currency must be USDT or USDC for cobo');
    const { tokenId = DEFAULT_TOKEN[currency], merchantId = DEFAULT_MERCHANT_ID } = input.extra ?? {};
    if (typeof tokenId !== 'string' || COBO_TOKENS[tokenId] !== currency) {
      const tokens = Object.keys(COBO_TOKENS).filter((t) => COBO_TOKENS[t] === currency);
      throw new SandboxBadRequest(`tokenId must be a ${currency} token: ${tokens.join(', ')}`);
    }
    if (typeof merchantId !== 'string' || !MERCHANT_ID_RE.test(merchantId)) {
      throw new SandboxBadRequest('merchantId must be 1 to 64 letters, digits, "-" or "_"');
    }
    const status = input.status ?? 'Completed';
    const payable = money(input.amount);
    // Underpaid: half of the amount arrived ([INF] sandbox choice); Pending/Expired: nothing yet.
    const received =
      status === 'Completed'
        ? input.amount
        : status === 'Underpaid'
          ? formatAmount(payable.div(2).toDecimalPlaces(2, Money.ROUND_DOWN))
          : '0';
    const now = new Date();
    const order = await this.db.transaction(async (tx) => {
      await tx.query('INSERT INTO sandbox.cobo_merchants (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING', [merchantId]);
      const [{ n }] = (await tx.query<{ n: string }>(`SELECT nextval('sandbox.cobo_order_seq')::text AS n`)) as [{ n: string }];
      const rows = await tx.query<OrderRow>(
        `INSERT INTO sandbox.cobo_orders
           (order_id, merchant_id, token_id, payable_amount, received_token_amount, status,
            merchant_order_code, psp_order_code, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         RETURNING *`,
        [
          `O${idDate(now)}-${merchantId}-${n}`,
          merchantId,
          tokenId,
          input.amount,
          received,
          status,
          `SO-${n}`,
          `PSP${randomInt(100_000_000, 999_999_999)}`,
          now,
        ],
      );
      return rows[0]!;
    });
    return this.toPayment(order, currency);
  }

  async listPayments(limit: number): Promise<SandboxPayment[]> {
    const rows = await this.db.query<OrderRow>(
      'SELECT * FROM sandbox.cobo_orders ORDER BY created_at DESC, order_id DESC LIMIT $1',
      [limit],
    );
    return rows.map((row) => this.toPayment(row, COBO_TOKENS[row.token_id] ?? row.token_id));
  }

  private toPayment(row: OrderRow, currency: string): SandboxPayment {
    return {
      provider: COBO_PROVIDER,
      paymentId: row.order_id,
      amount: row.payable_amount,
      currency,
      status: row.status,
      createdAt: row.created_at,
    };
  }

  // --- API -----------------------------------------------------------------------------------

  /** `GET /payments/orders/{order_id}`. */
  async getOrder(orderId: string): Promise<Record<string, unknown>> {
    const order = await this.db.one<OrderRow>('SELECT * FROM sandbox.cobo_orders WHERE order_id = $1', [orderId]);
    if (!order) throw notFound('Order');
    return orderView(order);
  }

  /** `POST /payments/refunds`: the Refund and its HTTP status, or throws CoboError. */
  async createRefund(
    req: CreateRefundRequest,
    faults: CoboFaults,
    initiator: string,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction((tx) => this.createRefundInTx(tx, req, faults, initiator));
      } catch (err) {
        // Two first requests with one request_id not serialised by an order lock (no order_id,
        // or different orders) meet at the unique index; the retry sees the winner as a duplicate.
        if (!isUniqueViolation(err) || attempt >= 3) throw err;
      }
    }
  }

  private async createRefundInTx(
    tx: Sql,
    req: CreateRefundRequest,
    faults: CoboFaults,
    initiator: string,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const order = req.orderId
      ? (await tx.query<OrderRow>('SELECT * FROM sandbox.cobo_orders WHERE order_id = $1 FOR UPDATE', [req.orderId]))[0]
      : undefined;
    // Read after taking the lock, so a concurrent twin that held it has committed its row.
    const [existing] = await tx.query<RefundRow>('SELECT * FROM sandbox.cobo_refunds WHERE request_id = $1', [req.requestId]);
    if (existing) {
      if (faults.duplicateRequestId === 'reject') {
        throw new CoboError(400, CoboCode.DUPLICATE_KEY, `Duplicate key: request_id ${req.requestId} already exists.`);
      }
      return { status: 201, body: refundView(existing) };
    }
    if (req.orderId && !order) throw notFound('Order');
    if (req.merchantId !== undefined) {
      const [merchant] = await tx.query('SELECT 1 FROM sandbox.cobo_merchants WHERE merchant_id = $1', [req.merchantId]);
      if (!merchant) throw notFound('Merchant');
      if (order && order.merchant_id !== req.merchantId) {
        throw new CoboError(400, CoboCode.BAD_PARAMETER, 'merchant_id does not match the order.');
      }
    }
    const amount = money(req.payableAmount);
    if (order) {
      if (order.token_id !== req.tokenId) {
        throw new CoboError(400, CoboCode.BAD_PARAMETER, `token_id does not match the order's token ${order.token_id}.`);
      }
      const refundable = money(order.received_token_amount).minus(order.reserved_amount);
      if (amount.gt(refundable)) {
        throw new CoboError(
          400,
          CoboCode.BAD_PARAMETER,
          `Refund amount exceeds refundable amount: at most ${formatAmount(refundable.lt(0) ? money('0') : refundable)} remains.`,
        );
      }
    }
    if (faults.insufficientBalance) {
      throw new CoboError(400, CoboCode.INSUFFICIENT_BALANCE, 'Insufficient balance for this refund.');
    }

    const now = new Date();
    const [{ seq }] = (await tx.query<{ seq: string }>(`SELECT nextval('sandbox.cobo_refund_seq')::text AS seq`)) as [
      { seq: string },
    ];
    const merchantId = req.merchantId ?? order?.merchant_id ?? null;
    const status: RefundStatus = req.toAddress ? 'Pending' : 'PendingConfirmation';
    const [refund] = await tx.query<RefundRow>(
      `INSERT INTO sandbox.cobo_refunds
         (seq, refund_id, request_id, order_id, merchant_id, token_id, amount, to_address, status, refund_type,
          charge_merchant_fee, merchant_fee_amount, merchant_fee_token_id, commission_fee, initiator,
          due_at, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
       RETURNING *`,
      [
        seq,
        `R${idDate(now)}-${merchantId ?? DEFAULT_MERCHANT_ID}-${seq}`,
        req.requestId,
        order?.order_id ?? null,
        merchantId,
        req.tokenId,
        req.payableAmount,
        req.toAddress ?? null,
        status,
        req.refundType,
        req.chargeMerchantFee,
        req.merchantFeeAmount ?? null,
        req.merchantFeeTokenId ?? null,
        SANDBOX_COMMISSION_FEE,
        initiator,
        status === 'Pending' ? new Date(now.getTime() + faults.processAfterMs) : null,
        now,
      ],
    );
    if (order) {
      await tx.query('UPDATE sandbox.cobo_orders SET reserved_amount = reserved_amount + $2 WHERE order_id = $1', [
        order.order_id,
        req.payableAmount,
      ]);
    }
    return { status: 201, body: refundView(refund!) };
  }

  /** `GET /payments/refunds/{refund_id}`, advanced to now first. */
  async getRefund(refundId: string, faults: CoboFaults): Promise<Record<string, unknown>> {
    const refund = await this.currentRefund(refundId, faults);
    if (!refund) throw notFound('Refund');
    return refundView(refund);
  }

  /** `GET /payments/refunds`: newest first, with before/after cursors. */
  async listRefunds(query: ListRefundsQuery, faults: CoboFaults): Promise<Record<string, unknown>> {
    await this.advanceAllDue(LAZY_ADVANCE_LIMIT, false, faults);
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (query.requestId !== undefined) add('request_id = ?', query.requestId);
    if (query.merchantId !== undefined) add('merchant_id = ?', query.merchantId);
    if (query.statuses !== undefined) add('status = ANY(?::text[])', query.statuses);
    const filter = where.length ? where.join(' AND ') : 'TRUE';
    const page = async (extra: string, value: unknown, order: 'ASC' | 'DESC') =>
      this.db.query<RefundRow>(
        `SELECT * FROM sandbox.cobo_refunds WHERE ${filter}${extra ? ` AND seq ${extra} $${params.length + 1}` : ''}
          ORDER BY seq ${order} LIMIT ${query.limit}`,
        extra ? [...params, value] : params,
      );
    let rows: RefundRow[];
    if (query.after !== undefined) rows = await page('<', query.after, 'DESC');
    else if (query.before !== undefined) rows = (await page('>', query.before, 'ASC')).reverse();
    else rows = await page('', undefined, 'DESC');

    const exists = async (op: '<' | '>', seq: string) =>
      (
        await this.db.query(`SELECT 1 FROM sandbox.cobo_refunds WHERE ${filter} AND seq ${op} $${params.length + 1} LIMIT 1`, [
          ...params,
          seq,
        ])
      ).length > 0;
    const [{ total }] = (await this.db.query<{ total: number }>(
      `SELECT count(*)::int AS total FROM sandbox.cobo_refunds WHERE ${filter}`,
      params,
    )) as [{ total: number }];
    const first = rows[0];
    const last = rows[rows.length - 1];
    return {
      data: rows.map(refundView),
      pagination: {
        before: first && (await exists('>', first.seq)) ? encodeCursor(first.seq) : '',
        after: last && (await exists('<', last.seq)) ? encodeCursor(last.seq) : '',
        total_count: total,
      },
    };
  }

  /** `PUT /payments/refunds/{refund_id}` `{to_address}`: only before processing starts. */
  async updateRefund(refundId: string, toAddress: string, faults: CoboFaults): Promise<Record<string, unknown>> {
    return this.changeBeforeProcessing(refundId, faults, 'updated', (row, now) => {
      const wasUnconfirmed = row.status === 'PendingConfirmation';
      return {
        ...row,
        to_address: toAddress,
        status: 'Pending',
        // Updating a Pending refund keeps its schedule; a confirmed one starts the wait now.
        due_at: wasUnconfirmed ? new Date(now + faults.processAfterMs) : row.due_at,
        updated_at: new Date(now),
      };
    });
  }

  /** `PUT /payments/refunds/{refund_id}/cancel`: ends Failed (see CANCELED_REASON). */
  async cancelRefund(refundId: string, faults: CoboFaults): Promise<Record<string, unknown>> {
    return this.changeBeforeProcessing(refundId, faults, 'canceled', (row, now) => ({
      ...row,
      status: 'Failed',
      failed_reason: CANCELED_REASON,
      completed_amount: '0',
      due_at: null,
      updated_at: new Date(now),
    }));
  }

  private async changeBeforeProcessing(
    refundId: string,
    faults: CoboFaults,
    verb: string,
    change: (row: RefundRow, now: number) => RefundRow,
  ): Promise<Record<string, unknown>> {
    return this.db.transaction(async (tx) => {
      const [locked] = await tx.query<RefundRow>('SELECT * FROM sandbox.cobo_refunds WHERE refund_id = $1 FOR UPDATE', [
        refundId,
      ]);
      if (!locked) throw notFound('Refund');
      const now = Date.now();
      // A Pending refund whose processing is due has started processing: too late to change.
      const current = await this.advanceInTx(tx, locked, faults, now);
      if (!isBeforeProcessing(current.status)) {
        throw new CoboError(400, CoboCode.INVALID_STATUS, `Refund in status ${current.status} cannot be ${verb}.`);
      }
      const next = change(current, now);
      await this.writeRefund(tx, next);
      await this.release(tx, current, next);
      if (next.status !== current.status) await this.queueWebhook(tx, next, faults, now);
      return refundView(next);
    });
  }

  // --- lifecycle -----------------------------------------------------------------------------

  /**
   * Advances due refunds (at most `limit`), each in its own transaction. The loop skips
   * refunds another process is advancing; lazy callers wait for them.
   */
  async advanceAllDue(limit: number, skipLocked: boolean, knownFaults?: CoboFaults): Promise<number> {
    const now = Date.now();
    const due = await this.db.query<{ refund_id: string }>(
      'SELECT refund_id FROM sandbox.cobo_refunds WHERE due_at <= $1 ORDER BY due_at LIMIT $2',
      [new Date(now), limit],
    );
    if (due.length === 0) return 0;
    const faults = knownFaults ?? (await this.faults());
    for (const { refund_id } of due) await this.advanceRefund(refund_id, skipLocked, faults);
    return due.length;
  }

  /** The refund as of now (advancing it if a step is due), or undefined. */
  private async currentRefund(refundId: string, faults: CoboFaults): Promise<RefundRow | undefined> {
    const row = await this.db.one<RefundRow>('SELECT * FROM sandbox.cobo_refunds WHERE refund_id = $1', [refundId]);
    if (!row || row.due_at === null || row.due_at.getTime() > Date.now()) return row;
    return (await this.advanceRefund(refundId, false, faults)) ?? row;
  }

  private async advanceRefund(refundId: string, skipLocked: boolean, faults: CoboFaults): Promise<RefundRow | undefined> {
    return this.db.transaction(async (tx) => {
      const [row] = await tx.query<RefundRow>(
        `SELECT * FROM sandbox.cobo_refunds WHERE refund_id = $1 FOR UPDATE${skipLocked ? ' SKIP LOCKED' : ''}`,
        [refundId],
      );
      return row ? this.advanceInTx(tx, row, faults, Date.now()) : undefined;
    });
  }

  /**
   * Runs the locked refund's due steps, writes it, releases money of a final failure and
   * queues one webhook per status change, all in the caller's transaction.
   */
  private async advanceInTx(tx: Sql, row: RefundRow, faults: CoboFaults, now: number): Promise<RefundRow> {
    if (row.due_at === null || row.due_at.getTime() > now) return row;
    const { state, changes } = advanceLifecycle(stateOf(row), now, {
      settleAfterMs: faults.settleAfterMs,
      partialCompletedRatio: faults.partialCompletedRatio,
      decideOutcome: (address) => decideOutcome(address, faults),
      fromAddress: hotWallet,
    });
    const next = withState(row, state);
    await this.writeRefund(tx, next);
    await this.release(tx, row, next);
    for (const change of changes) await this.queueWebhook(tx, withState(row, change), faults, change.updatedAt);
    return next;
  }

  private async writeRefund(tx: Sql, r: RefundRow): Promise<void> {
    await tx.query(
      `UPDATE sandbox.cobo_refunds
          SET status = $2, outcome = $3, to_address = $4, transactions = $5::jsonb, completed_amount = $6,
              failed_reason = $7, due_at = $8, settle_at = $9, updated_at = $10
        WHERE seq = $1`,
      [
        r.seq,
        r.status,
        r.outcome,
        r.to_address,
        JSON.stringify(r.transactions),
        r.completed_amount,
        r.failed_reason,
        r.due_at,
        r.settle_at,
        r.updated_at,
      ],
    );
  }

  /** Gives the order back what a refund that just became Failed/PartiallyCompleted did not pay out. */
  private async release(tx: Sql, before: RefundRow, after: RefundRow): Promise<void> {
    if (!after.order_id || before.status === after.status) return;
    const released = releasedAmount(after.status, after.amount, after.completed_amount).minus(
      releasedAmount(before.status, before.amount, before.completed_amount),
    );
    if (released.lte(0)) return;
    await tx.query('UPDATE sandbox.cobo_orders SET reserved_amount = reserved_amount - $2 WHERE order_id = $1', [
      after.order_id,
      released.toFixed(),
    ]);
  }

  private async queueWebhook(tx: Sql, refund: RefundRow, faults: CoboFaults, changedAtMs: number): Promise<void> {
    // The fault setting wins; else the URL "configured in Cobo's dashboard": the service's own.
    const url = faults.webhookUrl ?? (this.options?.webhookBaseUrl ? `${this.options.webhookBaseUrl}/webhooks/cobo` : null);
    if (!url) return;
    // Dropped webhooks keep a row (never sent) so tests can see the fault was applied.
    const dropped = chance(faults.dropWebhookRate);
    const copies = dropped ? 1 : chance(faults.duplicateWebhookRate) ? 2 : 1;
    if (dropped) this.countInjection('webhook_dropped');
    if (copies > 1) this.countInjection('webhook_duplicated');
    if (!dropped && faults.webhookDelayMs > 0) this.countInjection('webhook_delayed', copies);
    if (!dropped && faults.webhookJitterMs > 0) this.countInjection('webhook_jittered', copies);
    const eventId = randomUUID();
    const data = JSON.stringify(refundView(refund));
    for (let i = 0; i < copies; i++) {
      await tx.query(
        `INSERT INTO sandbox.cobo_webhooks
           (event_id, refund_id, order_id, url, refund_status, data, created_ms, status, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond')`,
        [
          eventId,
          refund.refund_id,
          refund.order_id,
          url,
          refund.status,
          data,
          changedAtMs,
          dropped ? 'DROPPED' : 'PENDING',
          webhookDelay(faults),
        ],
      );
    }
  }

  // --- inspection (the emulator's own records, for tests) ----------------------------------

  async inspectRefunds(orderId?: string): Promise<Array<Record<string, unknown>>> {
    await this.advanceAllDue(LAZY_ADVANCE_LIMIT, false);
    const rows = orderId
      ? await this.db.query<RefundRow>('SELECT * FROM sandbox.cobo_refunds WHERE order_id = $1 ORDER BY seq', [orderId])
      : await this.db.query<RefundRow>('SELECT * FROM sandbox.cobo_refunds ORDER BY seq DESC LIMIT 100');
    return rows.map((r) => ({
      ...refundView(r),
      // As requested (create's payable_amount); `amount` in the Refund object is the same value.
      payable_amount: r.amount,
      outcome: r.outcome,
      completed_amount: r.completed_amount,
      due_at: r.due_at?.toISOString() ?? null,
      settle_at: r.settle_at?.toISOString() ?? null,
      created_at: r.created_at.toISOString(),
      updated_at: r.updated_at.toISOString(),
    }));
  }

  async inspectOrder(orderId: string): Promise<Record<string, unknown> | undefined> {
    await this.advanceAllDue(LAZY_ADVANCE_LIMIT, false);
    const order = await this.db.one<OrderRow>('SELECT * FROM sandbox.cobo_orders WHERE order_id = $1', [orderId]);
    if (!order) return undefined;
    const refundable = money(order.received_token_amount).minus(order.reserved_amount);
    return { ...orderView(order), reserved_amount: order.reserved_amount, refundable_amount: formatAmount(refundable) };
  }

  async inspectWebhooks(filter: { orderId?: string; refundId?: string }): Promise<Array<Record<string, unknown>>> {
    const rows = filter.refundId
      ? await this.db.query<WebhookRow>('SELECT * FROM sandbox.cobo_webhooks WHERE refund_id = $1 ORDER BY id', [filter.refundId])
      : filter.orderId
        ? await this.db.query<WebhookRow>('SELECT * FROM sandbox.cobo_webhooks WHERE order_id = $1 ORDER BY id', [filter.orderId])
        : await this.db.query<WebhookRow>('SELECT * FROM sandbox.cobo_webhooks ORDER BY id DESC LIMIT 100');
    return rows.map((w) => ({
      id: w.id,
      event_id: w.event_id,
      refund_id: w.refund_id,
      order_id: w.order_id,
      url: w.url,
      refund_status: w.refund_status,
      created_timestamp: Number(w.created_ms),
      status: w.status,
      attempts: w.attempts,
      last_error: w.last_error,
      delivered_at: w.delivered_at?.toISOString() ?? null,
      created_at: w.created_at.toISOString(),
    }));
  }
}

