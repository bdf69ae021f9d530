import { formatAmount } from '../common/money.js';
import type { ProviderName } from '../providers/provider.js';
import type { RefundReason, RefundStatus } from './refund-status.js';

/** A row of the refunds table, as node-postgres returns it (numeric as string). */
export interface RefundRow {
  id: string;
  merchant_id: string;
  provider: ProviderName;
  payment_id: string;
  amount: string;
  currency: string;
  status: RefundStatus;
  reason: RefundReason;
  description: string | null;
  metadata: Record<string, string>;
  refunded_amount: string;
  provider_request_id: string | null;
  provider_refund_id: string | null;
  provider_status: string | null;
  provider_state: 'not_sent' | 'unknown' | 'acknowledged';
  failure_code: string | null;
  failure_message: string | null;
  failure_category: 'retryable' | 'final' | null;
  review_reason: string | null;
  review_flagged_at: Date | null;
  attempt_count: number;
  provider_details: Record<string, unknown>;
  provider_options: Record<string, unknown>;
  idempotency_key: string;
  request_hash: string;
  created_by_key_id: string | null;
  next_check_at: Date | null;
  check_count: number;
  lease_owner: string | null;
  lease_until: Date | null;
  created_at: Date;
  updated_at: Date;
  status_changed_at: Date;
  completed_at: Date | null;
}

/** The public refund object (refunds-api.md §3). */
export interface RefundJson {
  id: string;
  merchantId: string;
  provider: ProviderName;
  paymentId: string;
  amount: string;
  currency: string;
  status: RefundStatus;
  reason: RefundReason;
  description: string | null;
  metadata: Record<string, string>;
  refundedAmount: string;
  providerRefundId: string | null;
  providerStatus: string | null;
  failureCode: string | null;
  failureMessage: string | null;
  /** retryable | final: whether an ops retry can help (failed refunds only). */
  failureCategory: 'retryable' | 'final' | null;
  attemptCount: number;
  providerDetails: Record<string, unknown>;
  /** Set when a provider reported a final outcome that contradicts ours: a human must look. */
  review: { reason: string; flaggedAt: string } | null;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
}

export function toRefundJson(row: RefundRow): RefundJson {
  return {
    id: row.id,
    merchantId: row.merchant_id,
    provider: row.provider,
    paymentId: row.payment_id,
    amount: formatAmount(row.amount),
    currency: row.currency,
    status: row.status,
    reason: row.reason,
    description: row.description,
    metadata: row.metadata,
    refundedAmount: formatAmount(row.refunded_amount),
    providerRefundId: row.provider_refund_id,
    providerStatus: row.provider_status,
    failureCode: row.failure_code,
    failureMessage: row.failure_message,
    failureCategory: row.failure_category,
    attemptCount: row.attempt_count,
    providerDetails: row.provider_details,
    review: row.review_flagged_at ? { reason: row.review_reason ?? '', flaggedAt: row.review_flagged_at.toISOString() } : null,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    completedAt: row.completed_at ? row.completed_at.toISOString() : null,
  };
}
