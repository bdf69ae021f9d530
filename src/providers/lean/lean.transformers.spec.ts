import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { RefundCommand } from '../provider.js';
import { verifyLeanSignature } from './lean.webhook.js';
import { approveBody, classifyCreateError, createBody, outcomeOfRefund, paymentOf, reasonCodeOf } from './lean.transformers.js';

const cmd: RefundCommand = {
  refundId: 'r1',
  providerRequestId: 'abc123',
  providerRefundId: null,
  paymentId: '6f1c1a55-6d0b-4c6a-9d5e-2b8f0f3c9a11',
  amount: '10.100000000000000000',
  currency: 'AED',
  createdAt: new Date('2026-11-22T10:00:00Z'),
  reason: 'fraudulent',
  description: 'order 7',
  options: {},
  paymentData: {},
};

describe('Lean transformers', () => {
  it('sends a one-element array with an exact JSON number and our external_reference', () => {
    expect(createBody(cmd)).toBe(
      '[{"payment_id":"6f1c1a55-6d0b-4c6a-9d5e-2b8f0f3c9a11","amount":10.1,"currency":"AED","reason_code":"FRAUDULENT_PAYMENT","description":"order 7","external_reference":"abc123"}]',
    );
    expect(approveBody('r-9')).toBe('[{"refund_id":"r-9","status":"APPROVED"}]');
  });

  it('maps reasons, an explicit reasonCode winning', () => {
    expect(reasonCodeOf({ reason: 'order_canceled', options: {} })).toBe('ORDER_CANCELLED');
    expect(reasonCodeOf({ reason: 'other', options: { reasonCode: 'DUPLICATED_PAYMENT' } })).toBe('DUPLICATED_PAYMENT');
  });

  it('maps statuses: CREATED/APPROVED processing, REJECTED failed(rejected), FAILED failed, unknown processing', () => {
    const r = (status: string) => outcomeOfRefund({ refund_id: 'x', status, external_reference: 'abc123' }, cmd);
    expect(r('CREATED')).toMatchObject({ kind: 'pending', status: 'processing' });
    expect(r('APPROVED')).toMatchObject({ kind: 'pending', status: 'processing' });
    expect(r('COMPLETED')).toMatchObject({ kind: 'final', status: 'succeeded', update: { refundedAmount: '10.1' } });
    expect(r('REJECTED')).toMatchObject({ kind: 'final', status: 'failed', update: { failureCode: 'rejected' } });
    expect(r('FAILED')).toMatchObject({ kind: 'final', status: 'failed', update: { failureCode: 'FAILED' } });
    expect(r('SOMETHING_ELSE')).toMatchObject({ kind: 'pending', status: 'processing' });
    expect(r('CREATED')).toMatchObject({ update: { details: { reasonCode: 'FRAUDULENT_PAYMENT', externalReference: 'abc123' } } });
  });

  it('classifies create errors', () => {
    expect(classifyCreateError(400, 'INVALID_PARAMETERS', 'too much')).toMatchObject({ kind: 'final', update: { failureCode: 'INVALID_PARAMETERS' } });
    expect(classifyCreateError(429, 'RATE_LIMIT_EXCEEDED', undefined).kind).toBe('retry');
    expect(classifyCreateError(500, 'INTERNAL_SERVER_ERROR', undefined).kind).toBe('unknown');
  });

  it('treats only paid and reconciled payments as refundable', () => {
    expect(paymentOf({ amount: 100.5, currency: 'AED', status: 'ACCEPTED_BY_BANK', reconciliation: { status: 'RECONCILED' } }, 'p')).toMatchObject({
      amount: '100.5',
      refundable: true,
    });
    expect(paymentOf({ amount: 1, currency: 'AED', status: 'ACCEPTED_BY_BANK', reconciliation: { status: 'OUTSTANDING' } }, 'p')?.refundable).toBe(false);
    expect(paymentOf({ amount: 1, currency: 'AED', status: 'PENDING_WITH_BANK' }, 'p')?.refundable).toBe(false);
  });

  it('verifies lean-signature: sha512=<hex HMAC-SHA512(rawBody)>', () => {
    const body = Buffer.from('{"type":"refund.created"}');
    const sig = createHmac('sha512', 's3cret').update(body).digest('hex');
    expect(verifyLeanSignature('s3cret', body, `sha512=${sig}`)).toBe(true);
    expect(verifyLeanSignature('s3cret', Buffer.from('{"type":"refund.x"}'), `sha512=${sig}`)).toBe(false);
    expect(verifyLeanSignature('other', body, `sha512=${sig}`)).toBe(false);
    expect(verifyLeanSignature('s3cret', body, sig)).toBe(false);
    expect(verifyLeanSignature('s3cret', body, undefined)).toBe(false);
  });
});
