import { LosslessNumber, stringify } from 'lossless-json';
import { formatAmount, isDecimalString, money } from '../../common/money.js';
import type { ProviderOutcome, ProviderPayment, ProviderUpdate, RefundCommand } from '../provider.js';

/**
 * Pure translation between our model and Lean's Payouts refunds (providers.md §3, from
 * Lean's official Postman collection: array create, maker-checker PUT, paged list).
 */

export const LEAN_REASON_CODES = ['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED'] as const;

/** Our unified reason → Lean's reason code (contract §3). `other` has no Lean code of its own. */
export const LEAN_REASON_BY_REASON: Record<string, string> = {
  requested_by_customer: 'CUSTOMER_REQUEST',
  duplicate: 'DUPLICATED_PAYMENT',
  fraudulent: 'FRAUDULENT_PAYMENT',
  order_canceled: 'ORDER_CANCELLED',
  other: 'CUSTOMER_REQUEST',
};

/**
 * Lean's name for a paid-out refund is not documented (providers.md §3.4); these are the
 * words accepted as final success. Anything else that is not CREATED/APPROVED/REJECTED/FAILED
 * stays `processing`, never success.
 */
export const LEAN_SUCCESS_STATUSES = new Set(['COMPLETED', 'PAID', 'SETTLED']);

/** Lean payment statuses that mean the money arrived (providers.md §3.9). */
const PAID_STATUSES = new Set(['ACCEPTED_BY_BANK', 'PROCESSED', 'COMPLETED', 'PAID']);

export function reasonCodeOf(cmd: Pick<RefundCommand, 'reason' | 'options'>): string {
  const explicit = (cmd.options as { reasonCode?: string }).reasonCode;
  return explicit ?? LEAN_REASON_BY_REASON[cmd.reason] ?? 'CUSTOMER_REQUEST';
}

/** POST /payouts/refunds takes a JSON array; amount is a JSON number in major units, written exactly. */
export function createBody(cmd: RefundCommand): string {
  return stringify([
    {
      payment_id: cmd.paymentId,
      amount: new LosslessNumber(formatAmount(cmd.amount)),
      currency: cmd.currency,
      reason_code: reasonCodeOf(cmd),
      ...(cmd.description ? { description: cmd.description.slice(0, 255) } : {}),
      // Lean has no idempotency key: our provider request id is how we find it again.
      external_reference: cmd.providerRequestId,
    },
  ]) as string;
}

export function approveBody(refundId: string): string {
  return JSON.stringify([{ refund_id: refundId, status: 'APPROVED' }]);
}

function str(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v instanceof LosslessNumber) return v.toString();
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

function amountOf(v: unknown): string | undefined {
  const s = str(v);
  return s !== undefined && isDecimalString(s) ? formatAmount(s) : undefined;
}

export function leanDetails(r: Record<string, unknown>, reasonCode: string, externalReference: string): Record<string, unknown> {
  return { reasonCode: str(r.reason_code) ?? reasonCode, externalReference: str(r.external_reference) ?? externalReference };
}

/** A Lean refund object → our outcome (contract §3: CREATED/APPROVED processing, REJECTED/FAILED failed). */
export function outcomeOfRefund(r: Record<string, unknown>, cmd: Pick<RefundCommand, 'amount' | 'reason' | 'options' | 'providerRequestId'>): ProviderOutcome {
  const status = str(r.status);
  const update: ProviderUpdate = {
    ...(str(r.refund_id) ? { providerRefundId: str(r.refund_id) } : {}),
    providerStatus: status,
    details: leanDetails(r, reasonCodeOf(cmd), cmd.providerRequestId),
  };
  if (status && LEAN_SUCCESS_STATUSES.has(status)) {
    return { kind: 'final', status: 'succeeded', update: { ...update, refundedAmount: formatAmount(cmd.amount) } };
  }
  switch (status) {
    case 'REJECTED':
      return { kind: 'final', status: 'failed', update: { ...update, failureCode: 'rejected', failureMessage: 'Lean rejected the refund.' } };
    case 'FAILED':
      return { kind: 'final', status: 'failed', update: { ...update, failureCode: 'FAILED', failureMessage: 'Lean failed the refund payout.' } };
    default:
      return { kind: 'pending', status: 'processing', update };
  }
}

/** Lean's `{status, message}` error words (providers.md §3.7) → outcome of a create. */
export function classifyCreateError(httpStatus: number, status: string | undefined, message: string | undefined): ProviderOutcome {
  const code = status ?? `HTTP_${httpStatus}`;
  if (httpStatus === 429 || code === 'RATE_LIMIT_EXCEEDED') return { kind: 'retry', reason: 'Lean rate limit' };
  // 401 is handled by the client (one retry with a fresh token); a second one is our config.
  if (httpStatus >= 500) return { kind: 'unknown', reason: `Lean HTTP ${httpStatus} ${code}` };
  return { kind: 'final', status: 'failed', update: { failureCode: code, failureMessage: message ?? `Lean refused the refund (${code}).` } };
}

export function paymentOf(p: Record<string, unknown>, paymentId: string): ProviderPayment | undefined {
  const amount = amountOf(p.amount);
  const currency = str(p.currency);
  const status = str(p.status);
  if (!amount || !currency || !status || money(amount).lte(0)) return undefined;
  const reconciliation = p.reconciliation && typeof p.reconciliation === 'object' ? (p.reconciliation as Record<string, unknown>) : undefined;
  const reconStatus = str(reconciliation?.status);
  // Only reconciled payments can be refunded; without reconciliation info Lean's own check decides.
  const reconciled = reconStatus === undefined ? true : reconStatus === 'RECONCILED';
  return {
    paymentId,
    amount,
    currency,
    providerStatus: status,
    refundable: PAID_STATUSES.has(status) && reconciled,
    data: { intentId: str(p.intent_id) ?? null, reconciliation: reconStatus ?? null },
  };
}
