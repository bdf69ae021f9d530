import { describe, expect, it } from 'vitest';
import type { RefundRow } from '../refunds/refund.row.js';
import { buildEvent } from './webhook-event.js';

const at = (s: string) => new Date(s);

function refund(overrides: Partial<RefundRow> = {}): RefundRow {
  return {
    id: '6f1c0f9e-8d9b-4a54-9b4a-1b7c1f0e0a01',
    merchant_id: 'M1',
    provider: 'binance_pay',
    payment_id: 'P1',
    amount: '25.170000000000000000',
    currency: 'USDT',
    status: 'succeeded',
    reason: 'other',
    description: null,
    metadata: {},
    refunded_amount: '25.170000000000000000',
    provider_request_id: 'r1',
    provider_refund_id: '123',
    provider_status: 'REFUND_SUCCESS',
    provider_state: 'acknowledged',
    failure_code: null,
    failure_message: null,
    failure_category: null,
    review_reason: null,
    review_flagged_at: null,
    attempt_count: 2,
    provider_details: {},
    provider_options: {},
    idempotency_key: 'k',
    request_hash: 'h',
    created_by_key_id: null,
    next_check_at: null,
    check_count: 0,
    lease_owner: null,
    lease_until: null,
    created_at: at('2025-01-01T00:00:00Z'),
    updated_at: at('2025-01-01T00:00:02Z'),
    status_changed_at: at('2025-01-01T00:00:02Z'),
    completed_at: at('2025-01-01T00:00:02Z'),
    ...overrides,
  } as RefundRow;
}

describe('merchant webhook event body', () => {
  it('is { id, type, createdAt, data } with a stable id and the refund object', () => {
    const e = buildEvent({ id: '42', refund_id: 'x', to_status: 'succeeded', created_at: at('2025-01-01T00:00:02Z') }, refund());
    expect(Object.keys(e)).toEqual(['id', 'type', 'createdAt', 'data']);
    expect(e).toMatchObject({ id: 'evt_42', type: 'refund.succeeded', createdAt: '2025-01-01T00:00:02.000Z' });
    expect(e.data).toMatchObject({ id: refund().id, status: 'succeeded', refundedAmount: '25.17', completedAt: '2025-01-01T00:00:02.000Z' });
  });

  it('carries the status of the event when the refund has moved on, with the status-bound fields consistent', () => {
    const e = buildEvent({ id: '40', refund_id: 'x', to_status: 'queued', created_at: at('2025-01-01T00:00:00Z') }, refund());
    expect(e.type).toBe('refund.queued');
    expect(e.data).toMatchObject({ status: 'queued', refundedAmount: '0', completedAt: null, failureCode: null, amount: '25.17' });
    // Other fields are the latest known.
    expect(e.data.providerStatus).toBe('REFUND_SUCCESS');
  });
});
