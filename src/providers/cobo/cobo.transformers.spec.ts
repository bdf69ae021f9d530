import { describe, expect, it } from 'vitest';
import type { RefundCommand } from '../provider.js';
import {
  classifyCreateError,
  classifyQueryError,
  createBody,
  outcomeOfRefund,
  paymentOfOrder,
  validateCoboCreate,
} from './cobo.transformers.js';

const cmd: RefundCommand = {
  refundId: 'r1',
  providerRequestId: 'req-1',
  providerRefundId: null,
  paymentId: 'O20250304-M1001-1001',
  amount: '12.500000000000000000',
  currency: 'USDT',
  createdAt: new Date('2026-11-22T10:00:00Z'),
  reason: 'requested_by_customer',
  description: null,
  options: { tokenId: 'TRON_USDT', toAddress: 'TXYZ', refundType: 'merchant', merchantFee: { amount: '0.10', tokenId: 'TRON_USDT' } },
  paymentData: { tokenId: 'TRON_USDT', coboMerchantId: 'M1001' },
};

const refund = (over: Record<string, unknown>) => ({
  refund_id: 'R1',
  request_id: 'req-1',
  token_id: 'TRON_USDT',
  chain_id: 'TRON',
  amount: '12.5',
  to_address: 'TXYZ',
  refund_type: 'Merchant',
  charge_merchant_fee: true,
  merchant_fee_amount: '0.10',
  merchant_fee_token_id: 'TRON_USDT',
  commission_fee: { fee_amount: '0.1' },
  transactions: [],
  ...over,
});

describe('Cobo transformers', () => {
  it('builds the create body with payable_amount, order_id and fee fields', () => {
    expect(JSON.parse(createBody(cmd))).toEqual({
      request_id: 'req-1',
      merchant_id: 'M1001',
      order_id: 'O20250304-M1001-1001',
      payable_amount: '12.5',
      token_id: 'TRON_USDT',
      refund_type: 'Merchant',
      to_address: 'TXYZ',
      charge_merchant_fee: true,
      merchant_fee_amount: '0.1',
      merchant_fee_token_id: 'TRON_USDT',
    });
    const psp = JSON.parse(createBody({ ...cmd, options: { tokenId: 'ETH_USDC', refundType: 'psp' } }));
    expect(psp).toMatchObject({ refund_type: 'Psp', token_id: 'ETH_USDC' });
    expect(psp.to_address).toBeUndefined();
    expect(psp.charge_merchant_fee).toBeUndefined();
  });

  it('validates token, currency and fee rules with field names', () => {
    const v = (amount: string, currency: string, options: Record<string, unknown>) => validateCoboCreate({ paymentId: 'O1', amount, currency, options });
    expect(v('10', 'USDT', { tokenId: 'TRON_USDT' })).toEqual([]);
    expect(v('10', 'USDT', { tokenId: 'DOGE' })[0].field).toBe('cobo.tokenId');
    expect(v('10', 'USDC', { tokenId: 'TRON_USDT' })[0].field).toBe('currency');
    expect(v('10', 'USDT', { tokenId: 'TRON_USDT', refundType: 'psp', merchantFee: { amount: '1', tokenId: 'TRON_USDT' } })[0].field).toBe('cobo.merchantFee');
    expect(v('10', 'USDT', { tokenId: 'TRON_USDT', merchantFee: { amount: '1', tokenId: 'ETH_USDT' } })[0].field).toBe('cobo.merchantFee.tokenId');
    expect(v('10', 'USDT', { tokenId: 'TRON_USDT', merchantFee: { amount: '10', tokenId: 'TRON_USDT' } })[0]).toEqual({
      field: 'cobo.merchantFee.amount',
      message: 'must be below the refund amount',
    });
    expect(v('10', 'USDT', { tokenId: 'TRON_USDT', merchantFee: { amount: '0.001', tokenId: 'TRON_USDT' } })[0].message).toMatch(/2 decimal/);
  });

  it('maps statuses per the contract', () => {
    expect(outcomeOfRefund(refund({ status: 'PendingConfirmation', to_address: '' }), '12.5')).toMatchObject({ kind: 'pending', status: 'requires_action' });
    expect(outcomeOfRefund(refund({ status: 'Pending' }), '12.5')).toMatchObject({ kind: 'pending', status: 'processing' });
    expect(outcomeOfRefund(refund({ status: 'Processing' }), '12.5')).toMatchObject({ kind: 'pending', status: 'processing' });
    expect(outcomeOfRefund(refund({ status: 'Completed' }), '12.5')).toMatchObject({ kind: 'final', status: 'succeeded', update: { refundedAmount: '12.5' } });
    expect(outcomeOfRefund(refund({ status: 'Failed', failed_reason: 'chain down' }), '12.5')).toMatchObject({
      kind: 'final',
      status: 'failed',
      update: { failureCode: 'Failed', failureMessage: 'chain down' },
    });
    expect(outcomeOfRefund(refund({ status: 'SomethingNew' }), '12.5')).toMatchObject({ kind: 'pending', status: 'processing' });
  });

  it('takes refundedAmount of a partial refund from its completed transactions', () => {
    const partial = refund({
      status: 'PartiallyCompleted',
      transactions: [
        { tx_id: 't1', amount: '6.25', status: 'Completed', created_timestamp: 1700000000000 },
        { tx_id: 't2', amount: '6.25', status: 'Failed' },
      ],
    });
    const out = outcomeOfRefund(partial, '12.5');
    expect(out).toMatchObject({ kind: 'final', status: 'partially_succeeded', update: { refundedAmount: '6.25' } });
    const details = (out as { update: { details: Record<string, unknown> } }).update.details;
    expect(details).toMatchObject({
      tokenId: 'TRON_USDT',
      chainId: 'TRON',
      refundType: 'merchant',
      merchantFee: { amount: '0.1', tokenId: 'TRON_USDT' },
    });
    expect((details.transactions as unknown[])[0]).toMatchObject({ txId: 't1', amount: '6.25', status: 'Completed', createdAt: '2023-11-14T22:13:20.000Z' });
    // Nothing completed: no money moved, so failed.
    expect(outcomeOfRefund(refund({ status: 'PartiallyCompleted', transactions: [{ amount: '12.5', status: 'Failed' }] }), '12.5')).toMatchObject({
      kind: 'final',
      status: 'failed',
    });
    // No transaction list: the paid part is unknown, so nothing final is concluded.
    expect(outcomeOfRefund(refund({ status: 'PartiallyCompleted', transactions: undefined }), '12.5')).toMatchObject({ kind: 'pending' });
  });

  it('classifies errors: auth and validation final, 2040 resolved by lookup, 5xx/429 transient', () => {
    expect(classifyCreateError({ httpStatus: 401, errorCode: '2023' })).toMatchObject({ kind: 'final', status: 'failed', update: { failureCode: '2023' } });
    expect(classifyCreateError({ httpStatus: 400, errorCode: '2006', message: 'bad' })).toMatchObject({ kind: 'final', update: { failureMessage: 'bad' } });
    expect(classifyCreateError({ httpStatus: 400, errorCode: '2040' }).kind).toBe('unknown');
    expect(classifyCreateError({ httpStatus: 500, errorCode: '2000' }).kind).toBe('unknown');
    expect(classifyCreateError({ httpStatus: 429 }).kind).toBe('retry');
    expect(classifyQueryError({ httpStatus: 404, errorCode: '2028' }).kind).toBe('unknown');
  });

  it('honours Retry-After of a signed rate-limit answer (1 s without one)', () => {
    expect(classifyCreateError({ httpStatus: 429, errorCode: '2026', retryAfterMs: 5_000 })).toMatchObject({ kind: 'retry', retryAfterMs: 5_000 });
    expect(classifyQueryError({ httpStatus: 400, errorCode: '2010', retryAfterMs: 2_000 })).toMatchObject({ kind: 'retry', retryAfterMs: 2_000 });
    expect(classifyCreateError({ httpStatus: 429 })).toMatchObject({ kind: 'retry', retryAfterMs: 1_000 });
  });

  it('marks "Pending" as older than "Processing", so a late webhook cannot undo it', () => {
    expect(outcomeOfRefund(refund({ status: 'Pending' }), '12.5')).toMatchObject({ kind: 'pending', update: { supersededBy: ['Processing'] } });
    expect((outcomeOfRefund(refund({ status: 'Processing' }), '12.5') as { update: { supersededBy?: unknown } }).update.supersededBy).toBeUndefined();
  });

  it('reads a pay-in order; only Completed is refundable', () => {
    const order = { order_id: 'O1', merchant_id: 'M1001', token_id: 'ETH_USDC', chain_id: 'ETH', payable_amount: '50', received_token_amount: '50.00', status: 'Completed' };
    expect(paymentOfOrder(order, 'O1')).toMatchObject({ amount: '50', currency: 'USDC', refundable: true, providerMerchantId: 'M1001' });
    expect(paymentOfOrder({ ...order, status: 'Expired' }, 'O1')?.refundable).toBe(false);
  });
});
