import type { ProviderName } from '../providers/provider.js';

export interface PaymentRow {
  provider: ProviderName;
  payment_id: string;
  merchant_id: string;
  amount: string;
  currency: string;
  status: string;
  provider_data: Record<string, unknown>;
  /** Incremented by every change that raises what is spoken for (migration 1763930000000); bigint as text. */
  guard_version: string;
  created_at: Date;
  updated_at: Date;
}

/** What is already spoken for on one payment (refunds-api.md §4, over-refund guard). */
export interface PaymentBalance {
  /** Sum of refundedAmount of final refunds (succeeded, partially_succeeded). */
  refunded: string;
  /** Sum of amounts of refunds still in flight (pending_approval .. requires_action). */
  reserved: string;
  /** paid - refunded - reserved. */
  refundable: string;
  /** Refunds that used (or will use) one of the provider's refund slots. */
  slotsUsed: number;
  /** Slots left by the provider's own last report, less refunds accepted but not yet sent (null: never reported). */
  reportedRemaining: number | null;
}
