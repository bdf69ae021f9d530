import { describe, expect, it } from 'vitest';
import { coboHeaders, ed25519PublicHex, signCoboRequest, verifyCoboResponse, signCoboResponse } from '../../providers/cobo/cobo.signing.js';
import { FaultValidationError } from '../sandbox-faults.js';
import { COBO_FAULT_DEFAULTS, parseCoboFaultPatch, resolveCoboFaults } from './cobo.faults.js';
import {
  CoboError,
  LifecycleState,
  advanceLifecycle,
  buildWebhookEvent,
  chainOf,
  checkCoboAuth,
  decideOutcome,
  decodeCursor,
  encodeCursor,
  parseCoboBody,
  parseCreateRefund,
  parseListRefunds,
  refundView,
  releasedAmount,
  splitPartial,
  webhookRetryDelay,
} from './cobo.rules.js';

const SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const KEY = ed25519PublicHex(SEED);
const PATH = '/sandbox/cobo/v2/payments/refunds';
const NOW = 1_700_000_000_000;

function auth(headers: Record<string, string | undefined>, body = '{"a":1}', path = PATH, query = '') {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return checkCoboAuth({ method: 'POST', path, query, body, headers: lower, now: NOW, windowMs: 1_000, registeredKey: KEY });
}

function code(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof CoboError) return err.code;
    throw err;
  }
  return undefined;
}

const base = {
  request_id: 'rf-1',
  payable_amount: '12.50',
  token_id: 'TRON_USDT',
  refund_type: 'Merchant',
};

describe('Cobo emulator rules: authentication', () => {
  it('accepts a request signed over the full path, query and body', () => {
    expect(auth(coboHeaders(SEED, 'POST', PATH, '', '{"a":1}', NOW))).toBeUndefined();
    const q = coboHeaders(SEED, 'POST', PATH, 'b=2&a=1', '{"a":1}', NOW);
    expect(auth(q, '{"a":1}', PATH, 'b=2&a=1')).toBeUndefined();
    expect(auth(q, '{"a":1}', PATH, 'a=1&b=2')?.code).toBe(2023); // order as sent matters
  });

  it('answers 2022, 2024 and 2023 in that order of checks', () => {
    const good = coboHeaders(SEED, 'POST', PATH, '', '{"a":1}', NOW);
    expect(auth({ ...good, 'Biz-Api-Nonce': undefined })).toMatchObject({ httpStatus: 401, code: 2022 });
    const stranger = coboHeaders('11'.repeat(32), 'POST', PATH, '', '{"a":1}', NOW);
    expect(auth(stranger)).toMatchObject({ httpStatus: 401, code: 2024 });
    expect(auth(good, '{"a":2}')?.code).toBe(2023);
    expect(auth(good, '{"a":1}', '/v2/payments/refunds')?.code).toBe(2023);
    const stale = coboHeaders(SEED, 'POST', PATH, '', '{"a":1}', NOW - 1_001);
    expect(auth(stale)?.code).toBe(2023);
    expect(auth({ ...good, 'Biz-Api-Nonce': 'abc' })?.code).toBe(2023);
    expect(auth({ ...good, 'Biz-Api-Signature': signCoboRequest(SEED, 'PUT', PATH, String(NOW), '', '{"a":1}') })?.code).toBe(2023);
    // Header names and the key's hex case do not matter.
    expect(auth({ ...good, 'Biz-Api-Key': KEY.toUpperCase() })).toBeUndefined();
  });
});

describe('Cobo emulator rules: CreateRefundRequest', () => {
  it('parses a complete request', () => {
    expect(
      parseCreateRefund({
        ...base,
        merchant_id: 'M1001',
        order_id: 'O1',
        to_address: 'T1',
        charge_merchant_fee: true,
        merchant_fee_amount: '0.1',
        merchant_fee_token_id: 'TRON_USDT',
      }),
    ).toEqual({
      requestId: 'rf-1',
      payableAmount: '12.50',
      tokenId: 'TRON_USDT',
      refundType: 'Merchant',
      merchantId: 'M1001',
      orderId: 'O1',
      toAddress: 'T1',
      chargeMerchantFee: true,
      merchantFeeAmount: '0.1',
      merchantFeeTokenId: 'TRON_USDT',
    });
    expect(parseCreateRefund({ ...base, to_address: null, charge_merchant_fee: false }).toAddress).toBeUndefined();
  });

  it('answers 2003 for missing and 2006 for bad values', () => {
    for (const field of Object.keys(base)) {
      expect(code(() => parseCreateRefund({ ...base, [field]: undefined })), field).toBe(2003);
    }
    const bad: Array<Record<string, unknown>> = [
      { payable_amount: '1.234' },
      { payable_amount: '0.00' },
      { payable_amount: '01' },
      { payable_amount: '1e3' },
      { payable_amount: 5 },
      { token_id: 'USDT' },
      { refund_type: 'merchant' },
      { request_id: '' },
      { request_id: 'x'.repeat(129) },
      { to_address: 'a b' },
      { extra: 1 },
      { charge_merchant_fee: 1 },
      { charge_merchant_fee: true, merchant_fee_amount: '12.50', merchant_fee_token_id: 'TRON_USDT' },
      { charge_merchant_fee: true, merchant_fee_amount: '0.1', merchant_fee_token_id: 'ETH_USDT' },
      { refund_type: 'Psp', charge_merchant_fee: true, merchant_fee_amount: '0.1', merchant_fee_token_id: 'TRON_USDT' },
      { merchant_fee_token_id: 'TRON_USDT' },
    ];
    for (const patch of bad) expect(code(() => parseCreateRefund({ ...base, ...patch })), JSON.stringify(patch)).toBe(2006);
    expect(code(() => parseCreateRefund({ ...base, charge_merchant_fee: true, merchant_fee_token_id: 'TRON_USDT' }))).toBe(2003);
    expect(code(() => parseCoboBody('[1]'))).toBe(2006);
    expect(code(() => parseCoboBody('{'))).toBe(2006);
    expect(parseCoboBody('')).toEqual({});
  });
});

describe('Cobo emulator rules: listing', () => {
  it('parses limits, statuses and opaque cursors', () => {
    expect(parseListRefunds(new URLSearchParams(''))).toMatchObject({ limit: 10 });
    const cursor = encodeCursor('1234');
    expect(decodeCursor(cursor, 'after')).toBe('1234');
    expect(parseListRefunds(new URLSearchParams(`limit=50&statuses=Pending,Processing&after=${cursor}&request_id=a+b`))).toEqual({
      limit: 50,
      statuses: ['Pending', 'Processing'],
      after: '1234',
      before: undefined,
      requestId: 'a b',
      merchantId: undefined,
    });
    for (const q of ['limit=0', 'limit=51', 'limit=1.5', 'statuses=Done', 'after=%%%', `before=${cursor}&after=${cursor}`]) {
      expect(code(() => parseListRefunds(new URLSearchParams(q))), q).toBe(2006);
    }
    expect(code(() => decodeCursor(Buffer.from('cobo-refund:x').toString('base64url'), 'before'))).toBe(2006);
  });
});

describe('Cobo emulator rules: lifecycle', () => {
  const start: LifecycleState = {
    status: 'Pending',
    outcome: null,
    amount: '10',
    tokenId: 'ETH_USDT',
    toAddress: '0xabc',
    transactions: [],
    completedAmount: null,
    failedReason: null,
    dueAt: NOW,
    settleAt: null,
    updatedAt: NOW - 300,
  };
  const opts = (outcome: 'Completed' | 'PartiallyCompleted' | 'Failed') => ({
    settleAfterMs: 1_000,
    partialCompletedRatio: 0.5,
    decideOutcome: () => outcome,
    fromAddress: () => '0xhot',
  });

  it('moves Pending → Processing (Submitted) → Confirming → Completed, each at its due time', () => {
    const s1 = advanceLifecycle(start, NOW, opts('Completed'));
    expect(s1.state).toMatchObject({ status: 'Processing', dueAt: NOW + 500, settleAt: NOW + 1_000 });
    expect(s1.state.transactions).toMatchObject([{ status: 'Submitted', amount: '10', from_address: '0xhot', to_address: '0xabc' }]);
    expect(s1.state.transactions[0]!.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(s1.changes.map((c) => c.status)).toEqual(['Processing']);
    const s2 = advanceLifecycle(s1.state, NOW + 600, opts('Completed'));
    expect(s2.changes).toEqual([]);
    expect(s2.state.transactions[0]).toMatchObject({ status: 'Confirming', updated_timestamp: NOW + 500 });
    expect(advanceLifecycle(s2.state, NOW + 999, opts('Completed')).state).toBe(s2.state);
    const s3 = advanceLifecycle(s2.state, NOW + 1_000, opts('Completed'));
    expect(s3.state).toMatchObject({ status: 'Completed', completedAmount: '10', dueAt: null, updatedAt: NOW + 1_000 });
    expect(s3.state.transactions[0]!.status).toBe('Completed');
  });

  it('catches up in one call, one change per status', () => {
    const { state, changes } = advanceLifecycle(start, NOW + 60_000, opts('Failed'));
    expect(changes.map((c) => c.status)).toEqual(['Processing', 'Failed']);
    expect(state).toMatchObject({ status: 'Failed', completedAmount: '0', failedReason: expect.any(String) });
    expect(state.transactions.map((t) => t.status)).toEqual(['Failed']);
  });

  it('splits partial refunds and releases what did not complete', () => {
    const { state } = advanceLifecycle({ ...start, amount: '0.05' }, NOW + 60_000, opts('PartiallyCompleted'));
    expect(state.status).toBe('PartiallyCompleted');
    expect(state.transactions.map((t) => [t.amount, t.status])).toEqual([
      ['0.02', 'Completed'],
      ['0.03', 'Failed'],
    ]);
    expect(releasedAmount(state.status, state.amount, state.completedAmount).toFixed()).toBe('0.03');
    expect(releasedAmount('Failed', '7', '0').toFixed()).toBe('7');
    expect(releasedAmount('Completed', '7', '7').toFixed()).toBe('0');
    // Too small to split: it fails.
    expect(advanceLifecycle({ ...start, amount: '0.01' }, NOW + 60_000, opts('PartiallyCompleted')).state.status).toBe('Failed');
    expect(splitPartial('1', 0.999)).toEqual({ completed: '0.99', failed: '0.01' });
    expect(splitPartial('1', 0.001)).toEqual({ completed: '0.01', failed: '0.99' });
  });

  it('decides outcomes from the address first, then the rates', () => {
    const rates = { failRate: 0, partialRate: 0 };
    expect(decideOutcome('FAIL-1', rates)).toBe('Failed');
    expect(decideOutcome('PARTIAL-1', rates)).toBe('PartiallyCompleted');
    expect(decideOutcome('T1', rates)).toBe('Completed');
    expect(decideOutcome('T1', { failRate: 1, partialRate: 0 })).toBe('Failed');
    expect(decideOutcome('T1', { failRate: 0, partialRate: 1 })).toBe('PartiallyCompleted');
  });
});

describe('Cobo emulator rules: wire formats', () => {
  it('shows seconds on the refund, milliseconds on transactions, and leaves unset optionals out', () => {
    const view = refundView({
      refund_id: 'R1',
      request_id: 'q',
      order_id: null,
      merchant_id: null,
      token_id: 'BASE_USDC',
      amount: '1.5',
      to_address: null,
      status: 'PendingConfirmation',
      refund_type: 'Psp',
      charge_merchant_fee: false,
      merchant_fee_amount: null,
      merchant_fee_token_id: null,
      commission_fee: '0.1',
      failed_reason: null,
      initiator: 'api_key_k',
      transactions: [],
      created_at: new Date(NOW + 999),
      updated_at: new Date(NOW),
    });
    expect(view).toEqual({
      refund_id: 'R1',
      request_id: 'q',
      token_id: 'BASE_USDC',
      chain_id: 'BASE',
      amount: '1.5',
      to_address: '',
      status: 'PendingConfirmation',
      refund_type: 'Psp',
      charge_merchant_fee: false,
      commission_fee: { fee_amount: '0.1' },
      initiator: 'api_key_k',
      transactions: [],
      created_timestamp: NOW / 1000,
      updated_timestamp: NOW / 1000,
    });
    expect(chainOf('ARBITRUM_USDCOIN')).toBe('ARBITRUM');
  });

  it('builds webhook envelopes whose retry fields count down', () => {
    const event = (attemptsMade: number) =>
      JSON.parse(
        buildWebhookEvent({ eventId: 'e1', url: 'http://x', refund: { refund_id: 'R1' }, createdMs: NOW, attemptsMade, now: NOW + 10 }),
      );
    expect(event(0)).toEqual({
      event_id: 'e1',
      url: 'http://x',
      type: 'payment.refund.status.updated',
      data: { data_type: 'PaymentRefund', refund_id: 'R1' },
      created_timestamp: NOW,
      status: 'Retrying',
      next_retry_timestamp: NOW + 10 + 500,
      retries_left: 6,
    });
    expect(event(6)).toMatchObject({ status: 'Failed', retries_left: 0, next_retry_timestamp: 0, created_timestamp: NOW });
    expect(webhookRetryDelay(6)).toBe(16_000);
    expect(webhookRetryDelay(7)).toBeUndefined();
    const body = buildWebhookEvent({ eventId: 'e', url: 'u', refund: {}, createdMs: NOW, attemptsMade: 0, now: NOW });
    expect(verifyCoboResponse(KEY, body, '1', signCoboResponse(SEED, body, '1'))).toBe(true);
  });
});

describe('Cobo emulator faults', () => {
  it('validates patches and overlays stored settings on the defaults', () => {
    expect(resolveCoboFaults({})).toEqual(COBO_FAULT_DEFAULTS);
    expect(parseCoboFaultPatch({ webhookUrl: null, partialCompletedRatio: 0.25 })).toEqual({ webhookUrl: null, partialCompletedRatio: 0.25 });
    for (const bad of [{ nope: 1 }, { partialCompletedRatio: 0 }, { webhookUrl: 'x' }, { duplicateRequestId: 'keep' }, null]) {
      expect(() => parseCoboFaultPatch(bad), JSON.stringify(bad)).toThrow(FaultValidationError);
    }
    expect(resolveCoboFaults({ failRate: 0.5, retired: true }).failRate).toBe(0.5);
  });
});
