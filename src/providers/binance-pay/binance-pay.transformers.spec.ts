import { parse } from 'lossless-json';
import { describe, expect, it } from 'vitest';
import type { RefundCommand } from '../provider.js';
import {
  classifyOrderResponse,
  classifyQueryResponse,
  classifyRefundResponse,
  outcomeOfRefundStatus,
  refundRequestBody,
} from './binance-pay.transformers.js';

const cmd: RefundCommand = {
  refundId: 'r1',
  providerRequestId: '68711039982968832',
  providerRefundId: null,
  paymentId: '383729303729303',
  amount: '25.170000000000000000',
  currency: 'USDT',
  createdAt: new Date('2026-11-22T10:00:00Z'),
  reason: 'requested_by_customer',
  description: null,
  options: {},
  paymentData: { prepayId: '383729303729303' },
};

const env = (text: string) => parse(text) as never;

describe('Binance Pay transformers', () => {
  it('writes refundAmount as an exact JSON number, never through a float', () => {
    const body = refundRequestBody({ ...cmd, amount: '0.100000000000000000' }, 'https://x.test/webhooks/binance-pay');
    expect(body).toBe(
      '{"refundRequestId":"68711039982968832","prepayId":"383729303729303","refundAmount":0.1,"refundReason":"Requested by customer","webhookUrl":"https://x.test/webhooks/binance-pay"}',
    );
    expect(refundRequestBody({ ...cmd, amount: '12345678.12345678' }, undefined)).toContain('"refundAmount":12345678.12345678');
  });

  it('reads a create answer as pending and keeps 19-digit ids exact', () => {
    const out = classifyRefundResponse(
      env(
        '{"status":"SUCCESS","code":"000000","data":{"refundId":281190290829148160123,"refundRequestId":"68711039982968832","prepayId":"383729303729303","orderAmount":"100.11","refundedAmount":"50.88","refundAmount":"25.17","remainingAttempts":8,"payerOpenId":"dde7","duplicateRequest":"N"},"errorMessage":""}',
      ),
      cmd.amount,
    );
    expect(out).toMatchObject({
      kind: 'pending',
      status: 'processing',
      update: { providerRefundId: '281190290829148160123', providerStatus: 'REFUND_PENDING', details: { remainingAttempts: 8, payerOpenId: 'dde7' } },
    });
  });

  it('classifies refusals as final failures with the provider code, and transient codes as retry/unknown', () => {
    const fail = (code: string) => env(`{"status":"FAIL","code":"${code}","errorMessage":"nope"}`);
    expect(classifyRefundResponse(fail('400304'), cmd.amount)).toMatchObject({
      kind: 'final',
      status: 'failed',
      update: { failureCode: '400304', failureMessage: 'nope' },
    });
    expect(classifyRefundResponse(fail('400303'), cmd.amount)).toMatchObject({ kind: 'final', status: 'failed' });
    expect(classifyRefundResponse(fail('400003'), cmd.amount).kind).toBe('retry');
    // Our own auth/config problems are not Binance's verdict on the refund: retried slowly.
    expect(classifyRefundResponse(fail('400002'), cmd.amount)).toMatchObject({ kind: 'retry', retryAfterMs: 60_000 });
    expect(classifyRefundResponse(fail('400004'), cmd.amount).kind).toBe('retry');
    expect(classifyRefundResponse(fail('400000'), cmd.amount).kind).toBe('unknown');
    expect(classifyRefundResponse(env('{"hello":1}'), cmd.amount).kind).toBe('unknown');
    expect(classifyRefundResponse(env('{"status":"SUCCESS","code":"000000"}'), cmd.amount).kind).toBe('unknown');
  });

  it('maps refund statuses per the contract; unknown words stay processing', () => {
    expect(outcomeOfRefundStatus('REFUND_SUCCESS', {}, '10')).toMatchObject({ kind: 'final', status: 'succeeded', update: { refundedAmount: '10' } });
    expect(outcomeOfRefundStatus('REFUND_FAIL', {}, '10')).toMatchObject({ kind: 'final', status: 'failed', update: { failureCode: 'REFUND_FAIL' } });
    expect(outcomeOfRefundStatus('REFUND_REJECTED', {}, '10')).toMatchObject({ kind: 'final', status: 'failed', update: { failureCode: 'REFUND_FAIL' } });
    expect(outcomeOfRefundStatus('REFUND_PENDING', {}, '10')).toMatchObject({ kind: 'pending', status: 'processing' });
    expect(outcomeOfRefundStatus('REFUND_SOMETHING_NEW', {}, '10')).toMatchObject({ kind: 'pending', status: 'processing', update: { providerStatus: 'REFUND_SOMETHING_NEW' } });
  });

  it('flags a success whose amount differs from ours instead of hiding it', () => {
    const out = outcomeOfRefundStatus('REFUND_SUCCESS', { details: { providerRefundAmount: '91' } }, '1.00');
    expect(out).toMatchObject({ kind: 'final', update: { refundedAmount: '1', details: { amountMismatch: { ours: '1', theirs: '91' } } } });
  });

  it('treats a query FAIL as not_found only for an unknown refund', () => {
    expect(classifyQueryResponse(env('{"status":"FAIL","code":"400202","errorMessage":"not found"}'), '1').kind).toBe('not_found');
    expect(classifyQueryResponse(env('{"status":"FAIL","code":"400002","errorMessage":"sig"}'), '1').kind).toBe('retry');
    expect(classifyQueryResponse(env('{"status":"FAIL","code":"400100","errorMessage":"param"}'), '1').kind).toBe('unknown');
    expect(
      classifyQueryResponse(env('{"status":"SUCCESS","code":"000000","data":{"refundRequestId":"x","refundStatus":"REFUND_SUCCESS","refundAmount":"1.00000000"}}'), '1'),
    ).toMatchObject({ kind: 'final', status: 'succeeded' });
  });

  it('reads order query v2 (data.status, data.orderAmount)', () => {
    const found = classifyOrderResponse(
      env('{"status":"SUCCESS","code":"000000","data":{"merchantId":98765,"prepayId":"383729303729303","currency":"USDT","orderAmount":"100.11","status":"PAID"}}'),
      '383729303729303',
    );
    expect(found).toMatchObject({ kind: 'found', payment: { amount: '100.11', currency: 'USDT', providerStatus: 'PAID', refundable: true } });
    const expired = classifyOrderResponse(
      env('{"status":"SUCCESS","code":"000000","data":{"currency":"USDT","orderAmount":"1","status":"EXPIRED"}}'),
      'p',
    );
    expect(expired).toMatchObject({ kind: 'found', payment: { refundable: false } });
    expect(classifyOrderResponse(env('{"status":"FAIL","code":"400202"}'), 'p').kind).toBe('not_found');
    expect(classifyOrderResponse(env('{"status":"FAIL","code":"400002"}'), 'p').kind).toBe('unavailable');
  });
});
