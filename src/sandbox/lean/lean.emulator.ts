import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { Money, formatFixed, money } from '../../common/money.js';
import { AppConfig } from '../../config/config.js';
import { Sql } from '../../database/database.js';
import { chance, webhookDelay } from '../sandbox-faults.js';
import { SandboxControlError } from '../sandbox-http.js';
import { LeanSandboxCredentials } from './lean.credentials.js';
import { LEAN_FAULT_DEFAULTS, LeanFaults, parseLeanFaultPatch, resolveLeanFaults } from './lean.faults.js';
import { LeanPaymentRow, LeanSandboxPayments } from './lean.payments.js';
import {
  AMOUNT_DECIMALS,
  Beneficiary,
  Checked,
  CreateRefundItem,
  LeanError,
  ProcessRefundItem,
  RefundListQuery,
  RefundView,
  TokenRequest,
  VerifiedToken,
  buildRefundWebhookBody,
  buildTokenClaims,
  createdRefundObject,
  leanJson,
  refundEventType,
  refundObject,
  secretsEqual,
  signJwt,
  verifyAccessToken,
} from './lean.rules.js';
import { LEAN_SANDBOX_OPTIONS, LeanSandboxOptions, LeanSandboxStore } from './lean.store.js';

/** Who Lean names in created_by / actioned_by (its Postman samples show the API gateway). */
export const LEAN_ACTOR = 'edge-gateway';

interface RefundRow {
  refund_id: string;
  seq: string;
  payment_id: string;
  amount: string;
  currency: string;
  reason_code: string;
  description: string | null;
  external_reference: string | null;
  status: string;
  outcome: string | null;
  settle_at: Date | null;
  created_by: string;
  actioned_by: string | null;
  actioned_at: Date | null;
  settled_at: Date | null;
  created_at: Date;
  /** created_at rendered by Postgres with microseconds, UTC. */
  created_at_text: string;
  beneficiary: Beneficiary;
}

interface WebhookRow {
  id: string;
  event_id: string;
  refund_id: string;
  payment_id: string;
  type: string;
  url: string;
  status: string;
  attempts: number;
  last_error: string | null;
  delivered_at: Date | null;
  created_at: Date;
  body: string;
}

const REFUND_VIEW_SQL = `
  SELECT r.*, to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at_text, p.beneficiary
    FROM sandbox.lean_refunds r JOIN sandbox.lean_payments p ON p.id = r.payment_id`;

function view(row: RefundRow): RefundView {
  return {
    refundId: row.refund_id,
    paymentId: row.payment_id,
    status: row.status,
    amount: row.amount,
    currency: row.currency,
    reasonCode: row.reason_code,
    description: row.description,
    externalReference: row.external_reference,
    beneficiary: row.beneficiary,
    createdAt: row.created_at_text,
    createdBy: row.created_by,
    actionedBy: row.actioned_by,
  };
}

/** Lowest index first, so a refused batch names its first bad item. */
function firstError<T>(checked: Array<Checked<T>>): LeanError | undefined {
  const bad = checked.filter((c): c is Extract<Checked<T>, { ok: false }> => !c.ok);
  bad.sort((a, b) => a.index - b.index);
  return bad[0]?.error;
}

function errorEntry(index: number, error: LeanError): Record<string, unknown> {
  return { index, status: error.status, message: error.message };
}

/**
 * The Lean emulator's state and rules over Postgres. Creating refunds locks the payments'
 * rows (SELECT ... FOR UPDATE, in id order), which serialises concurrent refunds of one
 * payment across all processes; the CHECK on lean_payments.reserved_amount is the backstop.
 * Other writers lock refund rows first, then payments in id order, so no cycle can form.
 */
@Injectable()
export class LeanSandboxEmulator {
  constructor(
    private readonly store: LeanSandboxStore,
    private readonly credentials: LeanSandboxCredentials,
    private readonly payments: LeanSandboxPayments,
    private readonly cfg: AppConfig,
    @Inject(LEAN_SANDBOX_OPTIONS) private readonly options: LeanSandboxOptions,
  ) {}

  private get db() {
    return this.store.db;
  }

  /** `iss` of issued tokens: the emulated auth host. */
  get issuer(): string {
    return `${this.cfg.sandboxUrl}/lean-auth`;
  }

  /** `aud` of issued tokens: the emulated API host. */
  get audience(): string {
    return `${this.cfg.sandboxUrl}/lean`;
  }

  // --- faults ------------------------------------------------------------------------------

  private get defaults(): LeanFaults {
    const configured = this.options.defaultWebhookUrl;
    const webhookUrl = typeof configured === 'function' ? configured(this.cfg) : configured;
    return { ...LEAN_FAULT_DEFAULTS, webhookUrl: webhookUrl ?? null };
  }

  async faults(): Promise<LeanFaults> {
    return resolveLeanFaults(await this.store.faults(), this.defaults);
  }

  /** Validates (throws FaultValidationError) and merges a partial update. */
  async patchFaults(body: unknown): Promise<LeanFaults> {
    const patch = parseLeanFaultPatch(body);
    return resolveLeanFaults(await this.store.patchFaults(patch), this.defaults);
  }

  async resetFaults(): Promise<LeanFaults> {
    await this.store.resetFaults();
    return this.faults();
  }

  /** Faults injected so far, by kind (every process serving the emulator counts into Postgres). */
  injected(): Promise<Record<string, number>> {
    return this.store.injections('lean');
  }

  resetInjected(): Promise<void> {
    return this.store.resetInjections('lean');
  }

  /** Counts an injected fault (best effort, not awaited). */
  countInjection(kind: string, n = 1): void {
    this.store.countInjection('lean', kind, n);
  }

  // --- OAuth2 ------------------------------------------------------------------------------

  /** `POST /oauth2/token`: checks the client, signs an RS256 JWT, counts it. */
  async issueToken(req: TokenRequest, faults: LeanFaults): Promise<Record<string, unknown>> {
    const app = await this.credentials.leanApplication();
    // Both compared, whatever the first result, so timing does not tell which one was wrong.
    const idOk = secretsEqual(req.clientId, app.clientId);
    const secretOk = secretsEqual(req.clientSecret, app.clientSecret);
    if (!idOk || !secretOk) throw new LeanError('UNAUTHORIZED', 'Bad client credentials');
    const keys = await this.credentials.signingKeys();
    const claims = buildTokenClaims({
      clientId: app.clientId,
      issuer: this.issuer,
      audience: this.audience,
      ttlSeconds: faults.tokenTtlSeconds,
      nowMs: Date.now(),
      customerId: req.customerId,
    });
    const accessToken = signJwt(claims, keys.kid, keys.privateKey);
    await this.db.query(
      `INSERT INTO sandbox.lean_tokens (jti, client_id, scope, issued_at, expires_at)
       VALUES ($1, $2, $3, to_timestamp($4), to_timestamp($5))`,
      [claims.jti, app.clientId, req.scope, claims.iat, claims.exp],
    );
    return { access_token: accessToken, scope: req.scope, token_type: 'Bearer', expires_in: faults.tokenTtlSeconds };
  }

  /** Verifies `Authorization: Bearer <jwt>`; throws LeanError UNAUTHORIZED. */
  async authenticate(authorization: string | undefined): Promise<VerifiedToken> {
    const keys = await this.credentials.signingKeys();
    return verifyAccessToken(authorization, {
      publicKey: keys.publicKey,
      kid: keys.kid,
      issuer: this.issuer,
      audience: this.audience,
      nowMs: Date.now(),
    });
  }

  async tokenStats(): Promise<{ issued: number; active: number }> {
    const [row] = await this.db.query<{ issued: number; active: number }>(
      `SELECT count(*)::int AS issued, (count(*) FILTER (WHERE expires_at > now()))::int AS active FROM sandbox.lean_tokens`,
    );
    return row!;
  }

  // --- payments ----------------------------------------------------------------------------

  /** `GET /payments/v1/{payment_id}`. Unknown ids are 404 INVALID_URL (no NOT_FOUND in Lean's list). */
  async getPayment(id: string): Promise<Record<string, unknown>> {
    const row = await this.payments.find(id.toLowerCase());
    if (!row) throw new LeanError('INVALID_URL', `No payment with id ${id}`);
    return this.payments.paymentObject(row);
  }

  // --- refunds -----------------------------------------------------------------------------

  /**
   * `POST /payouts/refunds`. Each item needs a known, reconciled payment in the same
   * currency and an amount within what is still refundable (refunds not REJECTED or
   * FAILED count, CREATED and APPROVED included). No idempotency: every call creates.
   */
  async createRefunds(checked: Array<Checked<CreateRefundItem>>, faults: LeanFaults): Promise<Array<Record<string, unknown>>> {
    const shapeError = firstError(checked);
    if (shapeError && !faults.partialBatch) throw shapeError;
    const valid = checked.filter((c): c is Extract<Checked<CreateRefundItem>, { ok: true }> => c.ok).map((c) => c.item);
    if (valid.length === 0) throw shapeError!;
    // Settle what is due first (outside the payment locks), so refunds that just failed free their amount.
    await this.settleDue(1_000, false, faults);

    return this.db.transaction(async (tx) => {
      const ids = [...new Set(valid.map((item) => item.paymentId))].sort();
      const locked = await tx.query<LeanPaymentRow>(
        'SELECT * FROM sandbox.lean_payments WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE',
        [ids],
      );
      const payments = new Map(locked.map((p) => [p.id, p]));
      const reserved = new Map<string, Money>(locked.map((p) => [p.id, money(p.reserved_amount)]));
      const results: Array<Checked<CreateRefundItem>> = checked.filter((c) => !c.ok);
      const accepted: CreateRefundItem[] = [];
      for (const item of valid) {
        const error = this.refusal(item, payments.get(item.paymentId), reserved);
        if (error) {
          results.push({ ok: false, index: item.index, error });
          continue;
        }
        reserved.set(item.paymentId, reserved.get(item.paymentId)!.plus(item.amount));
        accepted.push(item);
        results.push({ ok: true, index: item.index, item });
      }
      const refused = firstError(results);
      if (refused && (!faults.partialBatch || accepted.length === 0)) throw refused;

      const createdIds = new Map<number, string>();
      for (const item of accepted) {
        const refundId = randomUUID();
        await tx.query(
          `INSERT INTO sandbox.lean_refunds
             (refund_id, payment_id, amount, currency, reason_code, description, external_reference, status, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'CREATED', $8)`,
          [
            refundId,
            item.paymentId,
            item.amount.toFixed(AMOUNT_DECIMALS),
            item.currency,
            item.reasonCode,
            item.description,
            item.externalReference,
            LEAN_ACTOR,
          ],
        );
        createdIds.set(item.index, refundId);
      }
      for (const id of ids) {
        if (!payments.has(id)) continue;
        await tx.query('UPDATE sandbox.lean_payments SET reserved_amount = $2 WHERE id = $1', [
          id,
          reserved.get(id)!.toFixed(AMOUNT_DECIMALS),
        ]);
      }
      const views = await this.views(tx, [...createdIds.values()]);
      await this.queueWebhooks(tx, [...createdIds.values()].map((id) => views.get(id)!), faults);
      // A checker at Lean may reject a refund as soon as it exists (the create answer still says CREATED).
      const rejected = accepted.filter(() => chance(faults.checkerRejectRate)).map((item) => createdIds.get(item.index)!);
      if (rejected.length > 0) {
        const released = await tx.query<{ payment_id: string; amount: string }>(
          `UPDATE sandbox.lean_refunds SET status = 'REJECTED', actioned_by = 'lean-checker', actioned_at = now()
            WHERE refund_id = ANY($1::uuid[]) RETURNING payment_id, amount`,
          [rejected],
        );
        for (const r of released) {
          await tx.query('UPDATE sandbox.lean_payments SET reserved_amount = reserved_amount - $2 WHERE id = $1', [r.payment_id, r.amount]);
        }
      }

      results.sort((a, b) => a.index - b.index);
      return results.map((r) => (r.ok ? createdRefundObject(views.get(createdIds.get(r.item.index)!)!) : errorEntry(r.index, r.error)));
    });
  }

  /** Why Lean would refuse this item, or undefined. */
  private refusal(item: CreateRefundItem, payment: LeanPaymentRow | undefined, reserved: Map<string, Money>): LeanError | undefined {
    const at = `[${item.index}]`;
    if (!payment) return new LeanError('INVALID_PARAMETERS', `${at}.payment_id: no payment with id ${item.paymentId}`);
    if (payment.reconciliation_status !== 'RECONCILED') {
      return new LeanError('INVALID_PARAMETERS', `${at}.payment_id: payment ${payment.id} is not reconciled and cannot be refunded yet`);
    }
    if (item.currency !== payment.currency) {
      return new LeanError('INVALID_PARAMETERS', `${at}.currency must match the payment's currency (${payment.currency})`);
    }
    const remaining = money(payment.amount).minus(reserved.get(payment.id)!);
    if (item.amount.gt(remaining)) {
      return new LeanError(
        'INVALID_PARAMETERS',
        `${at}.amount exceeds the refundable amount of the payment (${remaining.toFixed(AMOUNT_DECIMALS)} ${payment.currency} left)`,
      );
    }
    return undefined;
  }

  /**
   * `PUT /payouts/refunds`: approves or rejects the listed refunds. Only CREATED refunds
   * can move; anything else is 400 INVALID_PARAMETERS. Approval decides the outcome (the
   * success status or FAILED at failRate) and when it is reached (settleAfterMs).
   */
  async processRefunds(checked: Array<Checked<ProcessRefundItem>>, faults: LeanFaults): Promise<Array<Record<string, unknown>>> {
    const shapeError = firstError(checked);
    if (shapeError && !faults.partialBatch) throw shapeError;
    const valid = checked.filter((c): c is Extract<Checked<ProcessRefundItem>, { ok: true }> => c.ok).map((c) => c.item);
    if (valid.length === 0) throw shapeError!;

    return this.db.transaction(async (tx) => {
      const ids = [...new Set(valid.map((item) => item.refundId))].sort();
      const rows = await tx.query<RefundRow>(
        'SELECT * FROM sandbox.lean_refunds WHERE refund_id = ANY($1::uuid[]) ORDER BY refund_id FOR UPDATE',
        [ids],
      );
      const current = new Map(rows.map((r) => [r.refund_id, r.status]));
      const byId = new Map(rows.map((r) => [r.refund_id, r]));
      const results: Array<Checked<ProcessRefundItem>> = checked.filter((c) => !c.ok);
      const accepted: ProcessRefundItem[] = [];
      for (const item of valid) {
        const status = current.get(item.refundId);
        const at = `[${item.index}]`;
        let error: LeanError | undefined;
        if (status === undefined) error = new LeanError('INVALID_PARAMETERS', `${at}.refund_id: no refund with id ${item.refundId}`);
        else if (status !== 'CREATED') {
          error = new LeanError(
            'INVALID_PARAMETERS',
            `${at}.refund_id: refund ${item.refundId} is ${status}; only CREATED refunds can be approved or rejected`,
          );
        }
        if (error) {
          results.push({ ok: false, index: item.index, error });
          continue;
        }
        current.set(item.refundId, item.status);
        accepted.push(item);
        results.push({ ok: true, index: item.index, item });
      }
      const refused = firstError(results);
      if (refused && (!faults.partialBatch || accepted.length === 0)) throw refused;

      const released = new Map<string, Money>();
      for (const item of accepted) {
        if (item.status === 'APPROVED') {
          await tx.query(
            `UPDATE sandbox.lean_refunds
                SET status = 'APPROVED', actioned_by = $2, actioned_at = now(), outcome = $3,
                    settle_at = now() + $4 * interval '1 millisecond'
              WHERE refund_id = $1`,
            [item.refundId, LEAN_ACTOR, chance(faults.failRate) ? 'FAILED' : faults.successStatus, faults.settleAfterMs],
          );
        } else {
          const row = byId.get(item.refundId)!;
          await tx.query(
            `UPDATE sandbox.lean_refunds SET status = 'REJECTED', actioned_by = $2, actioned_at = now(), outcome = 'REJECTED'
              WHERE refund_id = $1`,
            [item.refundId, LEAN_ACTOR],
          );
          released.set(row.payment_id, (released.get(row.payment_id) ?? money('0')).plus(row.amount));
        }
      }
      await this.release(tx, released);
      const views = await this.views(tx, accepted.map((item) => item.refundId));
      await this.queueWebhooks(tx, accepted.map((item) => views.get(item.refundId)!), faults);

      results.sort((a, b) => a.index - b.index);
      return results.map((r) => (r.ok ? { refund_id: r.item.refundId, status: r.item.status } : errorEntry(r.index, r.error)));
    });
  }

  /** `GET /payouts/refunds`: newest first, `{content, page}`. */
  async listRefunds(query: RefundListQuery): Promise<Record<string, unknown>> {
    await this.settleDue(1_000, false);
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.status) {
      params.push(query.status);
      where.push(`r.status = $${params.length}`);
    }
    if (query.paymentId) {
      params.push(query.paymentId);
      where.push(`r.payment_id = $${params.length}`);
    }
    const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const [count] = await this.db.query<{ total: number }>(`SELECT count(*)::int AS total FROM sandbox.lean_refunds r ${clause}`, params);
    const rows = await this.db.query<RefundRow>(
      `${REFUND_VIEW_SQL} ${clause} ORDER BY r.created_at DESC, r.seq DESC LIMIT $${params.length + 1} OFFSET $${params.length + 2}`,
      [...params, query.size, query.page * query.size],
    );
    const total = count!.total;
    return {
      content: rows.map((row) => refundObject(view(row))),
      page: { number: query.page, size: query.size, total_elements: total, total_pages: Math.ceil(total / query.size), sort: null },
    };
  }

  // --- settlement --------------------------------------------------------------------------

  /**
   * Moves due APPROVED refunds to their decided outcome, releases failed amounts and queues
   * the webhooks in one transaction, so exactly one process settles each refund. The loop
   * skips rows another process holds; lazy callers (reads) wait for them instead.
   */
  async settleDue(limit: number, skipLocked: boolean, knownFaults?: LeanFaults): Promise<number> {
    // Read before the transaction: a second pool connection taken while holding one could
    // starve the pool when many transactions wait on the same locks.
    const faults = knownFaults ?? (await this.faults());
    return this.db.transaction(async (tx) => {
      const settled = await tx.query<{ refund_id: string; payment_id: string; amount: string; status: string }>(
        // The batch is picked once, in a MATERIALIZED CTE: as an IN (sub-select with LIMIT and
        // a locking clause) Postgres may run it again during the update and take more than
        // `limit` rows (docs/performance.md, finding 57).
        `WITH due AS MATERIALIZED (
           SELECT refund_id FROM sandbox.lean_refunds
            WHERE status = 'APPROVED' AND settle_at <= now()
            ORDER BY refund_id LIMIT $1
            FOR UPDATE${skipLocked ? ' SKIP LOCKED' : ''})
         UPDATE sandbox.lean_refunds r SET status = r.outcome, settled_at = now()
           FROM due
          WHERE r.refund_id = due.refund_id AND r.status = 'APPROVED'
          RETURNING r.refund_id, r.payment_id, r.amount, r.status`,
        [limit],
      );
      if (settled.length === 0) return 0;
      await this.release(tx, this.failedAmounts(settled));
      const views = await this.views(tx, settled.map((r) => r.refund_id));
      await this.queueWebhooks(tx, settled.map((r) => views.get(r.refund_id)!), faults);
      return settled.length;
    });
  }

  /** Control: forces an APPROVED refund's outcome now (`COMPLETED` means the success status). */
  async forceSettle(refundId: string, outcome: string): Promise<Record<string, unknown>> {
    const faults = await this.faults();
    const finalStatus = outcome === 'FAILED' ? 'FAILED' : faults.successStatus;
    return this.db.transaction(async (tx) => {
      const [row] = await tx.query<RefundRow>('SELECT * FROM sandbox.lean_refunds WHERE refund_id = $1 FOR UPDATE', [refundId]);
      if (!row) throw new SandboxControlError(404, 'refund not found');
      if (row.status !== 'APPROVED') throw new SandboxControlError(409, `refund is ${row.status}; only APPROVED refunds can be settled`);
      const settled = await tx.query<{ refund_id: string; payment_id: string; amount: string; status: string }>(
        `UPDATE sandbox.lean_refunds SET status = $2, outcome = $2, settled_at = now() WHERE refund_id = $1
          RETURNING refund_id, payment_id, amount, status`,
        [refundId, finalStatus],
      );
      await this.release(tx, this.failedAmounts(settled));
      const views = await this.views(tx, [refundId]);
      await this.queueWebhooks(tx, [views.get(refundId)!], faults);
      return refundObject(views.get(refundId)!);
    });
  }

  private failedAmounts(rows: Array<{ payment_id: string; amount: string; status: string }>): Map<string, Money> {
    const released = new Map<string, Money>();
    for (const r of rows) {
      if (r.status === 'FAILED') released.set(r.payment_id, (released.get(r.payment_id) ?? money('0')).plus(r.amount));
    }
    return released;
  }

  /** Gives amounts back to their payments, locking the payments in id order. */
  private async release(tx: Sql, amounts: Map<string, Money>): Promise<void> {
    for (const paymentId of [...amounts.keys()].sort()) {
      await tx.query('UPDATE sandbox.lean_payments SET reserved_amount = reserved_amount - $2 WHERE id = $1', [
        paymentId,
        amounts.get(paymentId)!.toFixed(AMOUNT_DECIMALS),
      ]);
    }
  }

  private async views(tx: Sql, refundIds: string[]): Promise<Map<string, RefundView>> {
    if (refundIds.length === 0) return new Map();
    const rows = await tx.query<RefundRow>(`${REFUND_VIEW_SQL} WHERE r.refund_id = ANY($1::uuid[])`, [refundIds]);
    return new Map(rows.map((row) => [row.refund_id, view(row)]));
  }

  /** One webhook per status change, in the same transaction as the change. */
  private async queueWebhooks(tx: Sql, refunds: RefundView[], faults: LeanFaults): Promise<void> {
    if (!faults.webhookUrl) return;
    for (const refund of refunds) {
      const eventId = randomUUID();
      const body = buildRefundWebhookBody({
        type: refundEventType(faults.eventPrefix, refund.status),
        refund,
        eventId,
        now: new Date(),
      });
      // Dropped webhooks keep a row (never sent) so tests can see the fault was applied;
      // a duplicate is a second delivery of the same event (same event_id).
      const dropped = chance(faults.dropWebhookRate);
      const copies = !dropped && chance(faults.duplicateWebhookRate) ? 2 : 1;
      if (dropped) this.countInjection('webhook_dropped');
      if (copies > 1) this.countInjection('webhook_duplicated');
      if (!dropped && faults.webhookDelayMs > 0) this.countInjection('webhook_delayed', copies);
      if (!dropped && faults.webhookJitterMs > 0) this.countInjection('webhook_jittered', copies);
      for (let i = 0; i < copies; i++) {
        await tx.query(
          `INSERT INTO sandbox.lean_webhooks (event_id, refund_id, payment_id, type, url, body, status, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8 * interval '1 millisecond')`,
          [
            eventId,
            refund.refundId,
            refund.paymentId,
            refundEventType(faults.eventPrefix, refund.status),
            faults.webhookUrl,
            body,
            dropped ? 'DROPPED' : 'PENDING',
            webhookDelay(faults),
          ],
        );
      }
    }
  }

  // --- inspection (the emulator's own records, for tests) ----------------------------------

  async inspectRefunds(paymentId?: string): Promise<Array<Record<string, unknown>>> {
    await this.settleDue(1_000, false);
    const rows = paymentId
      ? await this.db.query<RefundRow>(`${REFUND_VIEW_SQL} WHERE r.payment_id = $1 ORDER BY r.created_at, r.seq`, [paymentId])
      : await this.db.query<RefundRow>(`${REFUND_VIEW_SQL} ORDER BY r.created_at DESC, r.seq DESC LIMIT 100`);
    return rows.map((row) => ({
      ...refundObject(view(row)),
      // Decimal strings here, so tests can sum them exactly.
      amount: formatFixed(row.amount, AMOUNT_DECIMALS),
      deposit_amount: formatFixed(row.amount, AMOUNT_DECIMALS),
      outcome: row.outcome,
      settle_at: row.settle_at?.toISOString() ?? null,
      actioned_at: row.actioned_at?.toISOString() ?? null,
      settled_at: row.settled_at?.toISOString() ?? null,
    }));
  }

  async inspectPayment(paymentId: string): Promise<Record<string, unknown> | undefined> {
    const row = await this.payments.find(paymentId);
    return row ? this.payments.inspectionObject(row) : undefined;
  }

  async reconcilePayment(paymentId: string, status: 'RECONCILED' | 'OUTSTANDING'): Promise<Record<string, unknown>> {
    const row = await this.payments.setReconciliation(paymentId, status);
    if (!row) throw new SandboxControlError(404, 'payment not found');
    return this.payments.inspectionObject(row);
  }

  async inspectWebhooks(paymentId?: string): Promise<Array<Record<string, unknown>>> {
    const rows = paymentId
      ? await this.db.query<WebhookRow>('SELECT * FROM sandbox.lean_webhooks WHERE payment_id = $1 ORDER BY id', [paymentId])
      : await this.db.query<WebhookRow>('SELECT * FROM sandbox.lean_webhooks ORDER BY id DESC LIMIT 100');
    return rows.map((w) => ({
      id: w.id,
      eventId: w.event_id,
      refundId: w.refund_id,
      paymentId: w.payment_id,
      type: w.type,
      url: w.url,
      status: w.status,
      attempts: w.attempts,
      lastError: w.last_error,
      deliveredAt: w.delivered_at?.toISOString() ?? null,
      createdAt: w.created_at.toISOString(),
    }));
  }

  /** Serialises an API answer (LosslessNumber amounts digit for digit). */
  json(value: unknown): string {
    return leanJson(value);
  }
}
