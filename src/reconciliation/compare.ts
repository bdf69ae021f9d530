import { formatAmount, money } from '../common/money.js';
import type { ProviderRefundRecord } from '../providers/provider.js';
import { isFinal, type RefundStatus } from '../refunds/refund-status.js';

/**
 * Pure rules of reconciliation: how one of our refunds and the provider's record of it are
 * compared, and what each side looks like in a mismatch. No I/O here.
 */

export const MISMATCH_KINDS = ['missing_at_provider', 'missing_locally', 'status_mismatch', 'amount_mismatch'] as const;
export type MismatchKind = (typeof MISMATCH_KINDS)[number];

/** Our side of a comparison. */
export interface OurSide {
  status: RefundStatus;
  amount: string;
  refundedAmount: string;
}

/** `ours` / `theirs` of a mismatch: `{ status, amount }` plus what helps a person decide. */
export interface OurView {
  status: RefundStatus;
  amount: string;
  refundedAmount: string;
}

export interface TheirView {
  status: RefundStatus;
  amount: string | null;
  refundedAmount: string | null;
  providerStatus: string | null;
  currency: string | null;
  createdAt: string | null;
}

export function ourView(o: OurSide): OurView {
  return { status: o.status, amount: formatAmount(o.amount), refundedAmount: formatAmount(o.refundedAmount) };
}

export function theirView(r: ProviderRefundRecord): TheirView {
  return {
    status: r.status,
    amount: r.amount,
    refundedAmount: r.refundedAmount,
    providerStatus: r.providerStatus,
    currency: r.currency,
    createdAt: r.createdAt ? r.createdAt.toISOString() : null,
  };
}

/** No money moved either way: a refund we canceled is, for the books, one the provider failed. */
function settled(status: RefundStatus): RefundStatus {
  return status === 'canceled' ? 'failed' : status;
}

/**
 * The mismatches between our refund and the provider's record of it (empty: they agree).
 *
 * Status: only a final status of ours can disagree. Ours in flight while theirs is final is
 * the normal lag before our next poll, not a mismatch; ours final while theirs is still in
 * flight, or both final but different (succeeded vs failed, partial vs full), is.
 * Amount: compared as decimals ("12.50" = "12.5"): the refund's amount, and for a partial
 * refund on both sides what reached the payer (Cobo: the completed transactions).
 */
export function compareRefund(ours: OurSide, theirs: ProviderRefundRecord): MismatchKind[] {
  const kinds: MismatchKind[] = [];
  if (isFinal(ours.status)) {
    if (!isFinal(theirs.status) || settled(theirs.status) !== settled(ours.status)) kinds.push('status_mismatch');
  }
  if (theirs.amount !== null && !money(theirs.amount).eq(money(ours.amount))) {
    kinds.push('amount_mismatch');
  } else if (
    ours.status === 'partially_succeeded' &&
    theirs.status === 'partially_succeeded' &&
    theirs.refundedAmount !== null &&
    !money(theirs.refundedAmount).eq(money(ours.refundedAmount))
  ) {
    kinds.push('amount_mismatch');
  }
  return kinds;
}

/** Whether `t` lies in [from, to); an unknown time is taken as inside (it cannot be excluded). */
export function inWindow(t: Date | null, from: Date, to: Date, slackMs = 0): boolean {
  if (t === null) return true;
  const ms = t.getTime();
  return ms >= from.getTime() - slackMs && ms < to.getTime() + slackMs;
}

/** Our provider request ids are 32 lower-case hex digits (refund-worker.service.ts newProviderRequestId). */
export function looksLikeOurRequestId(id: string | null): boolean {
  return id !== null && /^[0-9a-f]{32}$/.test(id);
}
