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
  /**
   * The provider could not be asked (down, timeout): the caller answers 503, not 404.
   * `transient`: no usable answer (transport failure, 5xx, 429, unparseable), so asking again
   * soon may work; `retryAfterMs`: the provider's Retry-After.
   */
  | { kind: 'unavailable'; reason: string; transient?: boolean; retryAfterMs?: number };

/** Everything an adapter needs to send one refund. */
export interface RefundCommand {
  refundId: string;
  /** Our id for this submission, stored before the call; the provider dedups on it. */
  providerRequestId: string;
  providerRefundId: string | null;
  paymentId: string;
  amount: string;
  currency: string;
  /** When the refund was accepted: bounds how far back a provider listing must be searched. */
  createdAt: Date;
  /** When a create was last sent for it (null: never), for providers that confirm absence by listing. */
  lastCreateAt?: Date | null;
  reason: string;
  description: string | null;
  /** The request's provider block (cobo / lean options), as validated at creation. */
  options: Record<string, unknown>;
  /** The cached payment's provider data (e.g. Binance prepayId, Cobo merchant id). */
  paymentData: Record<string, unknown>;
}

/**
 * Result of a change asked of the provider outside the normal flow (Cobo address update,
 * cancel): `done` (the provider applied it), `refused` (the provider says it cannot, e.g.
 * already processing) or `unknown` (no trustworthy answer).
 */
export interface ProviderActionResult {
  outcome: 'done' | 'refused' | 'unknown';
  message?: string;
  update?: ProviderUpdate;
  call: CallRecord;
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
  /**
   * For non-final answers: provider statuses that come later in the refund's life than this
   * one. A refund already holding one of them ignores this answer (it is a late or reordered
   * webhook), so its provider status and details never go backwards.
   */
  supersededBy?: readonly string[];
}

/** One provider call, as recorded in refund_attempts. */
export interface CallRecord {
  operation: string;
  /** Outcome label of this call when it differs from the step's (extra calls). */
  outcome?: string;
  httpStatus: number | null;
  providerCode: string | null;
  latencyMs: number;
  errorMessage?: string;
}

export interface ProviderResult {
  outcome: ProviderOutcome;
  call: CallRecord;
  /** Further calls the same step made (Lean: create, then approve), recorded as attempts too. */
  extraCalls?: CallRecord[];
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
  /**
   * True when re-sending a create with the same provider request id can never make a
   * second refund (Binance dedups on refundRequestId, Cobo answers 2040). Such a create is
   * re-sent now and then while queries stay inconclusive; Lean (no idempotency) never is.
   */
  readonly createIsIdempotent: boolean;
  /** False when the provider has no credentials (and the sandbox does not serve it). */
  isEnabled(): boolean;
  lookupPayment(paymentId: string): Promise<PaymentLookup>;
  submitRefund(cmd: RefundCommand): Promise<ProviderResult>;
  queryRefund(cmd: RefundCommand): Promise<ProviderResult>;
  /** The canonical form of a payment id (e.g. lower-case UUIDs), applied before lookup and storage. */
  normalizePaymentId?(paymentId: string): string;
  /** Provider-specific checks of a create request (field errors), before anything is stored. */
  validateCreate?(input: CreateInput): { field: string; message: string }[];
  /** Whether a cached payment may be refunded in this request (e.g. Cobo token must match). */
  checkPayment?(input: CreateInput, paymentData: Record<string, unknown>): string | undefined;
  /** Sets the destination of a refund waiting for one (Cobo PendingConfirmation). */
  updateRefundAddress?(cmd: RefundCommand, toAddress: string): Promise<ProviderActionResult>;
  /** Cancels a refund the provider holds but has not started paying. */
  cancelRefund?(cmd: RefundCommand): Promise<ProviderActionResult>;
  /**
   * Reconciliation: one page of the provider's refund list (providers with a list endpoint:
   * Cobo cursors, Lean pages). `cursor` is null for the first page and otherwise the
   * `nextCursor` of the previous page. The window is a hint an adapter may pass on as a
   * provider-side filter; callers filter by it themselves. Read only: never changes anything.
   */
  listRefunds?(window: RefundWindow, cursor: string | null): Promise<ProviderRefundPage>;
  /**
   * Reconciliation: the provider's record of one refund, by provider refund id when known,
   * else by our provider request id. Read only (unlike queryRefund, which may act, e.g.
   * Lean's approve of a refund still CREATED).
   */
  lookupRefund?(ref: RefundReference): Promise<ProviderRefundLookup>;
}

/** A time window [from, to). */
export interface RefundWindow {
  from: Date;
  to: Date;
}

/** What reconciliation knows about one of our submissions when it asks the provider. */
export interface RefundReference {
  providerRequestId: string;
  providerRefundId: string | null;
  paymentId: string;
  /** The cached payment's provider data (Binance prepayId, Cobo merchant id). */
  paymentData: Record<string, unknown>;
}

/** A refund as the provider records it, in our vocabulary (the adapter's own status mapping). */
export interface ProviderRefundRecord {
  providerRefundId: string | null;
  /** Our provider request id as the provider echoes it (Cobo request_id, Lean external_reference, Binance refundRequestId). */
  providerRequestId: string | null;
  paymentId: string | null;
  /** Mapped status: processing / requires_action while in flight, else the final status. */
  status: RefundStatus;
  providerStatus: string | null;
  /** The refund's amount at the provider (decimal string), when it reports one. */
  amount: string | null;
  /** What reached the payer, for final outcomes where the provider says (Cobo: completed transactions). */
  refundedAmount: string | null;
  currency: string | null;
  /** When the provider created it (null when it does not say or the value is unreadable). */
  createdAt: Date | null;
}

export type ProviderRefundPage =
  | { kind: 'page'; records: ProviderRefundRecord[]; nextCursor: string | null }
  /** No trustworthy page (transport failure, 5xx, rate limit, paging not as asked): try again later. */
  | { kind: 'error'; reason: string; retryAfterMs?: number };

export type ProviderRefundLookup =
  | { kind: 'found'; record: ProviderRefundRecord }
  /** The provider confirms it has no such refund. */
  | { kind: 'not_found' }
  | { kind: 'error'; reason: string; retryAfterMs?: number };

/** The parts of a create request adapters may check. */
export interface CreateInput {
  paymentId: string;
  amount: string;
  currency: string;
  options: Record<string, unknown>;
}

export const REFUND_PROVIDERS = Symbol('REFUND_PROVIDERS');
