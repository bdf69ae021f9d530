import { formatAmount } from '../common/money.js';
import { type RefundJson, type RefundRow, toRefundJson } from '../refunds/refund.row.js';
import { isFinal, type RefundStatus } from '../refunds/refund-status.js';

/** A refund_events row, as far as a webhook needs it. */
export interface RefundEventRow {
  id: string;
  refund_id: string;
  to_status: RefundStatus;
  created_at: Date;
}

/** The body of a merchant webhook (refunds-api.md §10). */
export interface WebhookEvent {
  id: string;
  type: string;
  createdAt: string;
  data: RefundJson;
}

/** The public event id: stable for a status change, the same on every attempt and redelivery. */
export function eventId(refundEventId: string | number): string {
  return `evt_${refundEventId}`;
}

/**
 * The event for one status change. `data` is the refund object read when the event was
 * dispatched (normally within a fraction of a second of the change), with the status of
 * the event. When the refund has moved on since, the fields the status determines are made
 * consistent with it — `refundedAmount` (the amount for succeeded, 0 for a non-final or
 * failed/canceled status), `completedAt` (the event time for a final status, else null) —
 * and the other fields (provider status, failure code, …) are the latest known.
 */
export function buildEvent(event: RefundEventRow, refund: RefundRow): WebhookEvent {
  const data = toRefundJson(refund);
  const status = event.to_status;
  if (refund.status !== status) {
    data.status = status;
    data.refundedAmount =
      status === 'succeeded' ? formatAmount(refund.amount) : status === 'partially_succeeded' ? data.refundedAmount : '0';
    data.completedAt = isFinal(status) ? event.created_at.toISOString() : null;
    if (status !== 'failed') {
      data.failureCode = null;
      data.failureMessage = null;
      if ('failureCategory' in data) (data as unknown as Record<string, unknown>).failureCategory = null;
    }
  }
  return {
    id: eventId(event.id),
    type: `refund.${status}`,
    createdAt: event.created_at.toISOString(),
    data,
  };
}
