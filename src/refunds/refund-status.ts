/**
 * The refund state machine (refunds-api.md §3). Every status change in the service is
 * checked against it (transitionMany() through sourcesOf, the claim's inline start through
 * canTransition); the database update is conditional on the expected old status, so a late
 * or duplicated provider answer can never move a refund backwards.
 */
export const REFUND_STATUSES = [
  'pending_approval',
  'queued',
  'processing',
  'requires_action',
  'succeeded',
  'partially_succeeded',
  'failed',
  'canceled',
] as const;
export type RefundStatus = (typeof REFUND_STATUSES)[number];

export const FINAL_STATUSES: readonly RefundStatus[] = ['succeeded', 'partially_succeeded', 'failed', 'canceled'];

/** Statuses whose full amount counts against the payment's refundable amount. */
export const RESERVING_STATUSES: readonly RefundStatus[] = [
  'pending_approval',
  'queued',
  'processing',
  'requires_action',
  'succeeded',
];

const TRANSITIONS: Record<RefundStatus, readonly RefundStatus[]> = {
  pending_approval: ['queued', 'canceled'],
  queued: ['processing', 'canceled'],
  processing: ['succeeded', 'partially_succeeded', 'failed', 'requires_action'],
  requires_action: ['processing', 'canceled'],
  succeeded: [],
  partially_succeeded: [],
  // Only an ops retry leaves `failed` (never a provider answer).
  failed: ['queued'],
  canceled: [],
};

export function isRefundStatus(value: unknown): value is RefundStatus {
  return typeof value === 'string' && (REFUND_STATUSES as readonly string[]).includes(value);
}

export function isFinal(status: RefundStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

/** Statuses nothing leaves (no transition out of them); `failed` can still be retried by ops. */
export const TERMINAL_STATUSES: readonly RefundStatus[] = REFUND_STATUSES.filter((s) => TRANSITIONS[s].length === 0);

export function canTransition(from: RefundStatus, to: RefundStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** The statuses from which `to` may be reached. */
export function sourcesOf(to: RefundStatus): RefundStatus[] {
  return REFUND_STATUSES.filter((from) => TRANSITIONS[from].includes(to));
}

export const REFUND_REASONS = ['requested_by_customer', 'duplicate', 'fraudulent', 'order_canceled', 'other'] as const;
export type RefundReason = (typeof REFUND_REASONS)[number];
