import { Injectable } from '@nestjs/common';
import { formatAmount, money } from '../common/money.js';
import { Problem } from '../common/problem.js';
import { Database, Sql } from '../database/database.js';
import type { ProviderName, ProviderPayment, RefundProvider } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import { PaymentBalance, PaymentRow } from './payment.row.js';

/**
 * Sums the refunds of one payment. Every path that can raise
 * what is spoken for (create, ops retry) reads it either under the payment's row lock, or
 * in a snapshot whose guard version its insert then requires to be unchanged
 * (RefundsService; the version moves with every new or re-opened refund, by trigger):
 * either way no concurrent create or retry can slip in between the check and the commit,
 * which makes the guard hold under any concurrency.
 *
 * The payment is named by two SQL expressions: parameters (BALANCE_SQL), or the columns of an
 * outer query when this is a LATERAL subquery over many payments (the create's batched snapshot).
 */
export function balanceSqlFor(provider: string, paymentId: string): string {
  return `
  SELECT
    COALESCE(SUM(CASE WHEN status = 'succeeded' THEN amount
                      WHEN status = 'partially_succeeded' THEN refunded_amount END), 0)::text AS refunded,
    COALESCE(SUM(CASE WHEN status IN ('pending_approval', 'queued', 'processing', 'requires_action')
                      THEN amount END), 0)::text AS reserved,
    (COUNT(*) FILTER (WHERE status NOT IN ('failed', 'canceled')
                         OR (status = 'failed' AND provider_state = 'acknowledged'))
     -- each ops retry of a refund the provider had acknowledged left a used slot behind
     + (SELECT COUNT(*) FROM refund_events e JOIN refunds r2 ON r2.id = e.refund_id
         WHERE r2.provider = ${provider} AND r2.payment_id = ${paymentId} AND e.from_status = 'failed' AND e.to_status = 'queued'
           AND e.detail->>'previousProviderState' = 'acknowledged'))::int AS slots_used,
    -- The provider's own count, where it reports one (Binance remainingAttempts), and the
    -- refunds no report can include yet because they were never sent: catches refunds made
    -- outside this service. A refund in flight (sent, its answer not yet written) is taken
    -- as counted by the latest report: Binance may have counted it before answering another
    -- refund, and subtracting it too would refuse the payment's last refund while it is in flight.
    MIN((provider_details->>'remainingAttempts')::int) AS reported_remaining,
    COUNT(*) FILTER (WHERE status IN ('pending_approval', 'queued', 'processing', 'requires_action')
                       AND provider_state = 'not_sent'
                       AND provider_details->>'remainingAttempts' IS NULL)::int AS unreported_active
  FROM refunds WHERE refunds.provider = ${provider} AND refunds.payment_id = ${paymentId}`;
}

export const BALANCE_SQL = balanceSqlFor('$1', '$2');

/** One row of BALANCE_SQL (also selected, under these names, by the create's snapshot read). */
export interface BalanceRow {
  refunded: string;
  reserved: string;
  slots_used: number;
  reported_remaining: number | null;
  unreported_active: number;
}

export function balanceOf(payment: Pick<PaymentRow, 'amount'>, row: BalanceRow): PaymentBalance {
  const refundable = money(payment.amount).minus(row.refunded).minus(row.reserved);
  return {
    refunded: formatAmount(row.refunded),
    reserved: formatAmount(row.reserved),
    refundable: formatAmount(refundable.isNegative() ? money('0') : refundable),
    slotsUsed: row.slots_used,
    reportedRemaining: row.reported_remaining === null ? null : Math.max(0, row.reported_remaining - row.unreported_active),
  };
}

/**
 * The over-refund guard and the provider's per-payment limits, for `amount` more on a
 * payment with this balance. The balance must be one no concurrent create or retry can have
 * changed by the time the refund commits: read under the payment's row lock, or checked
 * against the payment's guard version when the refund is inserted (RefundsService).
 */
export function checkFits(provider: RefundProvider, payment: Pick<PaymentRow, 'currency'>, balance: PaymentBalance, amount: string): void {
  if (money(amount).gt(balance.refundable)) {
    throw new Problem('amount_exceeds_refundable', `At most ${balance.refundable} ${payment.currency} can be refunded.`, {
      refundableAmount: balance.refundable,
    });
  }
  if (provider.maxRefundsPerPayment === undefined) return;
  const byCount = provider.maxRefundsPerPayment - balance.slotsUsed;
  const remaining = balance.reportedRemaining === null ? byCount : Math.min(byCount, balance.reportedRemaining);
  if (remaining <= 0) {
    throw new Problem('payment_not_refundable', `${provider.name} allows at most ${provider.maxRefundsPerPayment} refunds per payment.`, {
      refundableAmount: balance.refundable,
      remainingRefunds: 0,
    });
  }
  if (remaining === 1 && provider.lastRefundTakesRemainder && !money(amount).eq(balance.refundable)) {
    // Binance refunds the whole remainder on the last allowed refund, whatever we send:
    // accept only that exact amount rather than silently refunding more than asked.
    throw new Problem(
      'payment_not_refundable',
      `This would be the last refund ${provider.name} allows on the payment, and it always refunds the whole remainder: refund exactly ${balance.refundable}.`,
      { refundableAmount: balance.refundable, remainingRefunds: 1 },
    );
  }
}

@Injectable()
export class PaymentsService {
  constructor(
    private readonly db: Database,
    private readonly providers: ProvidersService,
  ) {}

  async findCached(provider: ProviderName, paymentId: string): Promise<PaymentRow | undefined> {
    return this.db.one<PaymentRow>(`SELECT * FROM payments WHERE provider = $1 AND payment_id = $2`, [provider, paymentId]);
  }

  /**
   * The payment as the provider reports it, asked only the first time a payment is
   * referenced; afterwards the cached row is the reference (the provider's own cap is the
   * second line of defence).
   */
  async fetchFromProvider(provider: ProviderName, paymentId: string): Promise<ProviderPayment> {
    const result = await this.providers.get(provider).lookupPayment(paymentId);
    if (result.kind === 'not_found') throw new Problem('payment_not_found', `No ${provider} payment ${paymentId}.`);
    if (result.kind === 'unavailable') {
      throw new Problem('service_unavailable', `Could not look up the payment at ${provider}; try again shortly.`, {
        retryAfterSeconds: 5,
      });
    }
    return result.payment;
  }

  /** Inserts the payment if it is not cached yet; the first merchant to refund it owns it. */
  async insertIfAbsent(tx: Sql, provider: ProviderName, merchantId: string, p: ProviderPayment): Promise<void> {
    await tx.query(
      `INSERT INTO payments (provider, payment_id, merchant_id, amount, currency, status, provider_data)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (provider, payment_id) DO NOTHING`,
      [provider, p.paymentId, merchantId, p.amount, p.currency, p.providerStatus, { ...p.data, refundable: p.refundable }],
    );
  }

  /** This merchant's account id at the provider: the configured mapping, else our own id. */
  async providerAccount(merchantId: string, provider: ProviderName): Promise<string> {
    const row = await this.db.one<{ provider_accounts: Record<string, { merchantId?: string }> }>(
      `SELECT provider_accounts FROM merchants WHERE id = $1`,
      [merchantId],
    );
    return row?.provider_accounts?.[provider]?.merchantId ?? merchantId;
  }

  /**
   * Locks the payment for a change that raises what is spoken for on it (an ops retry): every
   * locked create and retry on the payment is serialised by this lock. The change itself
   * moves the payment's guard version (a trigger on refunds), which tells an optimistic
   * create that read the balance before it to check again (RefundsService).
   */
  async lockForRaise(tx: Sql, provider: ProviderName, paymentId: string): Promise<PaymentRow | undefined> {
    const [row] = await tx.query<PaymentRow>(
      `SELECT * FROM payments WHERE provider = $1 AND payment_id = $2 FOR UPDATE`,
      [provider, paymentId],
    );
    return row;
  }

  async balance(sql: Sql, payment: PaymentRow): Promise<PaymentBalance> {
    const [row] = await sql.query<BalanceRow>(BALANCE_SQL, [payment.provider, payment.payment_id]);
    return balanceOf(payment, row);
  }

  /**
   * The over-refund guard and the provider's per-payment limits, for `amount` more on this
   * payment. Call with the payment row locked (FOR UPDATE, or lockForRaise) in the same transaction.
   */
  async assertFits(tx: Sql, provider: RefundProvider, payment: PaymentRow, amount: string): Promise<void> {
    checkFits(provider, payment, await this.balance(tx, payment), amount);
  }

  /** GET /v1/payments/{provider}/{paymentId}. */
  async view(provider: ProviderName, paymentId: string, merchantScope: string | null) {
    const payment = await this.findCached(provider, paymentId);
    if (!payment || (merchantScope !== null && payment.merchant_id !== merchantScope)) {
      throw new Problem('payment_not_found', `No ${provider} payment ${paymentId}.`);
    }
    const balance = await this.balance(this.db, payment);
    return {
      provider: payment.provider,
      paymentId: payment.payment_id,
      merchantId: payment.merchant_id,
      amount: formatAmount(payment.amount),
      currency: payment.currency,
      status: payment.status,
      refundedAmount: balance.refunded,
      reservedAmount: balance.reserved,
      refundableAmount: balance.refundable,
    };
  }
}
