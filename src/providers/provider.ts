import type { RefundStatus } from '../refunds/refund-status.js';

/**
 * The port every provider adapter implements. An adapter is small and boring: build the
 * request, sign, send, classify the outcome, map statuses. Retries, unknown-outcome
 * recovery and guards live once, in the core (processing/), and never see provider JSON.
 */
export const PROVIDERS = ['binance_pay', 'cobo', 'lean'] as const;
export type ProviderName = (typeof PROVIDERS)[number];

export function isProviderName(value: unknown): value is ProviderName {
  return typeof value === 'string' && (PROVIDERS as readonly string[]).includes(value);
}

/** What the provider told us about a payment, normalised. */
export interface ProviderPayment {
  paymentId: string;
  /** Decimal string: what the payer paid. */
  amount: string;
  currency: string;
  /** The provider's own status word, stored for finance and support. */
  providerStatus: string;
  /** Whether the provider's status allows refunds at all (paid, not expired or unpaid). */
  refundable: boolean;
  /** The provider's merchant id for the payment, where the provider reports one. */
  providerMerchantId?: string;
  /** Provider-specific facts kept with the cached payment. */
  data: Record<string, unknown>;
}

export type PaymentLookup =
  | { kind: 'found'; payment: ProviderPayment }
  | { kind: 'not_found' }
  /** The provider could not be asked (down, timeout): the caller answers 503, not 404. */
  | { kind: 'unavailable'; reason: string };

/** Everything an adapter needs to send one refund. */
export interface RefundCommand {
  refundId: string;
  /** Our id for this submission, stored before the call; the provider dedups on it. */
  providerRequestId: string;
  providerRefundId: string | null;
  paymentId: string;
  amount: string;
  currency: string;
  reason: string;
  description: string | null;
  /** The request's provider block (cobo / lean options), as validated at creation. */
  options: Record<string, unknown>;
  /** The cached payment's provider data (e.g. Binance prepayId). */
  paymentData: Record<string, unknown>;
}

/**
 * The classified result of one provider call.
 * - `pending`: the provider holds the refund and has not finished it (poll later).
 * - `final`: the provider finished it: succeeded, partially_succeeded or failed (a failure
 *   the provider confirms, e.g. REFUND_FAIL or a refusal such as insufficient balance).
 * - `not_found`: the provider confirms it has no refund with our request id, so a
 *   create with the *same* id may be (re)sent.
 * - `retry`: nothing happened at the provider for sure (rate limit, clock skew); the
 *   same request may be repeated after `retryAfterMs`.
 * - `unknown`: timeout, 5xx, unparseable or unverifiable answer: the refund may or may
 *   not exist; resolve by querying with the same id, never by a new id.
 */
export type ProviderOutcome =
  | { kind: 'pending'; status: Extract<RefundStatus, 'processing' | 'requires_action'>; update: ProviderUpdate }
  | { kind: 'final'; status: Extract<RefundStatus, 'succeeded' | 'partially_succeeded' | 'failed'>; update: ProviderUpdate }
  | { kind: 'not_found' }
  | { kind: 'retry'; reason: string; retryAfterMs?: number }
  | { kind: 'unknown'; reason: string };

/** Facts about the refund at the provider, merged into our row. */
export interface ProviderUpdate {
  providerRefundId?: string;
  providerStatus?: string;
  /** For final outcomes: what went back to the payer (decimal string). */
  refundedAmount?: string;
  failureCode?: string;
  failureMessage?: string;
  /** Merged into the refund's providerDetails. */
  details?: Record<string, unknown>;
}

/** One provider call, as recorded in refund_attempts. */
export interface CallRecord {
  operation: string;
  httpStatus: number | null;
  providerCode: string | null;
  latencyMs: number;
  errorMessage?: string;
}

export interface ProviderResult {
  outcome: ProviderOutcome;
  call: CallRecord;
}

export interface RefundProvider {
  readonly name: ProviderName;
  /** Decimal places the provider accepts for refund amounts. */
  readonly amountDecimals: number;
  /** The provider's cap on refunds per payment (Binance: 10), enforced before sending. */
  readonly maxRefundsPerPayment?: number;
  /**
   * Binance refunds the whole remainder on the last allowed refund, whatever amount is
   * sent; the core then only accepts a last refund of exactly the remainder.
   */
  readonly lastRefundTakesRemainder?: boolean;
  /** False when the provider has no credentials (and the sandbox does not serve it). */
  isEnabled(): boolean;
  lookupPayment(paymentId: string): Promise<PaymentLookup>;
  submitRefund(cmd: RefundCommand): Promise<ProviderResult>;
  queryRefund(cmd: RefundCommand): Promise<ProviderResult>;
}

export const REFUND_PROVIDERS = Symbol('REFUND_PROVIDERS');
