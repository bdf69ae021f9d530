import { LosslessNumber, isLosslessNumber, parse } from 'lossless-json';
import { describe, expect, it } from 'vitest';
import { money } from '../../common/money.js';
import { signBinanceRequest } from '../../providers/binance-pay/binance-pay.signing.js';
import { FaultValidationError } from '../sandbox-faults.js';
import { BINANCE_PAY_FAULT_DEFAULTS, parseBinancePayFaultPatch, resolveBinancePayFaults } from './binance-pay.faults.js';
import {
  BinanceFail,
  buildRefundWebhookBody,
  checkBinanceAuth,
  decideRefund,
  failEnvelope,
  isSameRefundRequest,
  isWebhookAcknowledged,
  orderStatusFromRefunds,
  parseBinanceBody,
  parseOrderQuery,
  parseRefundRequest,
  randomDigits,
  refundResultData,
  successEnvelope,
  webhookRetryDelay,
} from './binance-pay.rules.js';

const SECRET = 's3cr3t';
const KEY = 'api-key';
const NONCE = 'abcdefghijklmnopqrstuvwxyz012345';

function auth(overrides: Partial<Record<string, string | undefined>> = {}, now = 1_700_000_000_000, body = '{"a":1}') {
  const ts = overrides.ts ?? String(now);
  const nonce = overrides.nonce ?? NONCE;
  const headers: Record<string, string | undefined> = {
    'binancepay-timestamp': ts,
    'binancepay-nonce': nonce,
    'binancepay-certificate-sn': overrides.key ?? KEY,
    'binancepay-signature': overrides.sig ?? signBinanceRequest(SECRET, ts, nonce, body),
  };
  if ('drop' in overrides) delete headers[overrides.drop!];
  return checkBinanceAuth({
    headers,
    body,
    now,
    windowMs: 1_000,
    secretFor: (k) => (k === KEY ? SECRET : undefined),
  });
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof BinanceFail) return err.code;
    throw err;
  }
  return undefined;
}

describe('Binance auth', () => {
  it('accepts a correctly signed request', () => {
    expect(auth()).toBeUndefined();
  });

  it.each([
    ['a missing header', { drop: 'binancepay-signature' }, '400002'],
    ['a short nonce', { nonce: 'abc123' }, '400002'],
    ['a nonce with symbols', { nonce: 'abcdefghijklmnopqrstuvwxyz01234-' }, '400002'],
    ['a stale timestamp', { ts: String(1_700_000_000_000 - 1_001) }, '400003'],
    ['a future timestamp', { ts: String(1_700_000_000_000 + 1_001) }, '400003'],
    ['a non-numeric timestamp', { ts: 'yesterday' }, '400003'],
    ['an unknown key', { key: 'someone-else' }, '400004'],
    ['a wrong signature', { sig: 'AB'.repeat(64) }, '400002'],
  ])('rejects %s', (_label, overrides, expected) => {
    const failure = auth(overrides);
    expect(failure?.code).toBe(expected);
    expect(failure?.httpStatus).toBe(400);
  });

  it('rejects a lowercase-hex signature', () => {
    const sig = signBinanceRequest(SECRET, '1700000000000', NONCE, '{"a":1}').toLowerCase();
    expect(auth({ sig })?.code).toBe('400002');
  });

  it('signs the exact bytes: a re-serialised body does not verify', () => {
    const ts = '1700000000000';
    const sig = signBinanceRequest(SECRET, ts, NONCE, '{"a": 1}');
    expect(auth({ sig }, 1_700_000_000_000, '{"a":1}')?.code).toBe('400002');
  });
});

describe('refund request parsing', () => {
  const base = () => parseBinanceBody('{"refundRequestId":"r-1","prepayId":"123","refundAmount":25.17}');

  it('reads refundAmount exactly, as a decimal', () => {
    const body = parseBinanceBody('{"refundRequestId":"r","prepayId":"1","refundAmount":0.12345678}');
    expect(parseRefundRequest(body).refundAmount.toFixed()).toBe('0.12345678');
    expect(parseRefundRequest(base()).refundAmount.toFixed()).toBe('25.17');
  });

  it('accepts a numeric string amount too', () => {
    expect(parseRefundRequest({ ...base(), refundAmount: '3.50' }).refundAmount.toFixed()).toBe('3.5');
  });

  it.each([
    ['missing refundRequestId', { refundRequestId: undefined }, '400100'],
    ['empty refundRequestId', { refundRequestId: '' }, '400100'],
    ['long refundRequestId', { refundRequestId: 'x'.repeat(65) }, '400101'],
    ['long prepayId', { prepayId: '1'.repeat(20) }, '400101'],
    ['numeric prepayId', { prepayId: new LosslessNumber('123') }, '400100'],
    ['missing amount', { refundAmount: undefined }, '400100'],
    ['text amount', { refundAmount: 'ten' }, '400100'],
    ['zero amount', { refundAmount: new LosslessNumber('0') }, '400102'],
    ['negative amount', { refundAmount: new LosslessNumber('-1') }, '400102'],
    ['nine decimals', { refundAmount: new LosslessNumber('0.123456789') }, '400102'],
    ['long reason', { refundReason: 'x'.repeat(257) }, '400101'],
    ['ftp webhook', { webhookUrl: 'ftp://example.com/hook' }, '400102'],
    ['long webhook', { webhookUrl: `https://e.com/${'x'.repeat(250)}` }, '400101'],
  ])('rejects %s', (_label, patch, expected) => {
    const body: Record<string, unknown> = { ...base(), ...patch };
    expect(code(() => parseRefundRequest(body))).toBe(expected);
  });

  it('allows 64/19/256 character fields and trailing zeros beyond 8 decimals', () => {
    const req = parseRefundRequest({
      refundRequestId: 'x'.repeat(64),
      prepayId: '1'.repeat(19),
      refundAmount: new LosslessNumber('1.1000000000'),
      refundReason: 'y'.repeat(256),
      webhookUrl: 'http://127.0.0.1:1/hook',
    });
    expect(req.refundAmount.toFixed()).toBe('1.1');
  });

  it('answers 400001 for malformed or non-object JSON', () => {
    expect(code(() => parseBinanceBody('{"a":'))).toBe('400001');
    expect(code(() => parseBinanceBody('[1]'))).toBe('400001');
    expect(code(() => parseBinanceBody('12'))).toBe('400001');
    expect(parseBinanceBody('')).toEqual({});
  });

  it('lets prepayId win over merchantTradeNo in order queries', () => {
    expect(parseOrderQuery({ prepayId: '1', merchantTradeNo: 'm' })).toEqual({ prepayId: '1' });
    expect(parseOrderQuery({ merchantTradeNo: 'm' })).toEqual({ merchantTradeNo: 'm' });
    expect(code(() => parseOrderQuery({}))).toBe('400100');
  });
});

describe('refund decisions', () => {
  const order = (patch: Partial<{ status: string; orderAmount: string; reserved: string; remainingAttempts: number }> = {}) => ({
    status: patch.status ?? 'PAID',
    orderAmount: money(patch.orderAmount ?? '100'),
    reserved: money(patch.reserved ?? '0'),
    remainingAttempts: patch.remainingAttempts ?? 10,
  });

  it('accepts an amount within the remainder and counts the attempt down', () => {
    const d = decideRefund(order({ reserved: '40' }), money('60'), false);
    expect(d.amount.toFixed()).toBe('60');
    expect(d.remainingAttempts).toBe(9);
  });

  it('refunds the whole remainder on the last attempt, whatever was asked', () => {
    const d = decideRefund(order({ reserved: '9', remainingAttempts: 1 }), money('1'), false);
    expect(d.amount.toFixed()).toBe('91');
    expect(d.remainingAttempts).toBe(0);
  });

  it.each([
    ['an unpaid order', { status: 'INITIAL' }, '1', '400204'],
    ['a fully refunded order', { status: 'FULL_REFUNDED' }, '1', '400204'],
    ['no attempts left', { remainingAttempts: 0 }, '1', '400302'],
    ['more than the remainder', { reserved: '99.5' }, '0.50000001', '400303'],
    ['nothing left on the last attempt', { reserved: '100', remainingAttempts: 1 }, '1', '400303'],
  ])('refuses %s', (_label, patch, amount, expected) => {
    expect(code(() => decideRefund(order(patch), money(amount), false))).toBe(expected);
  });

  it('refuses with 400304 when the balance fault is on, after the other checks', () => {
    expect(code(() => decideRefund(order(), money('1'), true))).toBe('400304');
    expect(code(() => decideRefund(order(), money('101'), true))).toBe('400303');
  });

  it('compares duplicates by prepayId and amount value', () => {
    const stored = { prepayId: '1', requestedAmount: money('10.00000000') };
    expect(isSameRefundRequest(stored, { prepayId: '1', refundAmount: money('10') })).toBe(true);
    expect(isSameRefundRequest(stored, { prepayId: '1', refundAmount: money('10.01') })).toBe(false);
    expect(isSameRefundRequest(stored, { prepayId: '2', refundAmount: money('10') })).toBe(false);
  });

  it('derives the order status from its refunds', () => {
    expect(orderStatusFromRefunds(money('10'), money('0'), 1)).toBe('REFUNDING');
    expect(orderStatusFromRefunds(money('10'), money('4'), 0)).toBe('REFUNDED');
    expect(orderStatusFromRefunds(money('10'), money('10'), 0)).toBe('FULL_REFUNDED');
    expect(orderStatusFromRefunds(money('10'), money('0'), 0)).toBe('PAID');
  });
});

describe('wire formats', () => {
  const snapshot = {
    refundId: '123456789012345678',
    refundRequestId: 'r-1',
    prepayId: '8123456789012345678',
    orderAmount: '100',
    refundedAmount: '10.5',
    refundAmount: '10.5',
    remainingAttempts: 9,
    payerOpenId: 'open',
    duplicate: false,
  };

  it('writes refundId as a JSON number above 2^53 and amounts with 8 decimals', () => {
    const text = successEnvelope(refundResultData(snapshot));
    expect(text).toContain('"refundId":123456789012345678,');
    expect(text).toContain('"orderAmount":"100.00000000"');
    expect(text).toContain('"refundAmount":"10.50000000"');
    expect(text).toContain('"duplicateRequest":"N"');
    expect(text).toContain('"status":"SUCCESS","code":"000000"');
    expect(JSON.parse(failEnvelope('400002', 'x'))).toEqual({ status: 'FAIL', code: '400002', data: null, errorMessage: 'x' });
  });

  it('builds the refund webhook with a string-encoded data and a numeric bizId', () => {
    const body = buildRefundWebhookBody({
      prepayId: snapshot.prepayId,
      merchantTradeNo: 'm-1',
      orderAmount: '100.00000000',
      currency: 'USDT',
      transactTime: 1_700_000_000_000,
      openUserId: 'open',
      refundStatus: 'REFUND_FAIL',
      refund: snapshot,
    });
    expect(body.startsWith('{"bizType":"PAY_REFUND","bizId":8123456789012345678,"bizIdStr":"8123456789012345678"')).toBe(
      true,
    );
    const outer = parse(body) as Record<string, unknown>;
    expect(outer.bizStatus).toBe('REFUND_REJECTED');
    expect(typeof outer.data).toBe('string');
    const data = parse(outer.data as string) as Record<string, any>;
    expect(isLosslessNumber(data.totalFee) && data.totalFee.value).toBe('100');
    expect(JSON.parse(outer.data as string).refundInfo).toMatchObject({ refundRequestId: 'r-1', refundAmount: '10.50000000', remainingAttempts: 9 });
    expect(data.refundInfo.refundId).toBeUndefined();
  });

  it('generates ids of the right length', () => {
    for (let i = 0; i < 50; i++) {
      expect(randomDigits(18)).toMatch(/^[1-9]\d{17}$/);
      expect(BigInt(randomDigits(19, 8)) < 2n ** 63n).toBe(true);
    }
  });

  it('retries webhooks 6 times with growing delays, and needs 200 + returnCode SUCCESS', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(webhookRetryDelay)).toEqual([500, 1000, 2000, 4000, 8000, 16000, undefined]);
    expect(isWebhookAcknowledged(200, '{"returnCode":"SUCCESS","returnMessage":null}')).toBe(true);
    expect(isWebhookAcknowledged(200, '{"returnCode":"FAIL"}')).toBe(false);
    expect(isWebhookAcknowledged(200, 'OK')).toBe(false);
    expect(isWebhookAcknowledged(201, '{"returnCode":"SUCCESS"}')).toBe(false);
  });
});

describe('fault settings', () => {
  it('validates partial updates and rejects unknown keys', () => {
    expect(parseBinancePayFaultPatch({ errorRate: 0.5, insufficientBalance: true })).toEqual({
      errorRate: 0.5,
      insufficientBalance: true,
    });
    for (const bad of [
      { nope: 1 },
      { errorRate: 2 },
      { errorRate: '0.5' },
      { latencyMs: 1.5 },
      { latencyMs: -1 },
      { insufficientBalance: 'yes' },
      { duplicateMismatch: 'ignore' },
      [],
      null,
    ]) {
      expect(() => parseBinancePayFaultPatch(bad), JSON.stringify(bad)).toThrow(FaultValidationError);
    }
  });

  it('overlays stored settings on the defaults', () => {
    expect(resolveBinancePayFaults(undefined)).toEqual(BINANCE_PAY_FAULT_DEFAULTS);
    expect(resolveBinancePayFaults({ settleAfterMs: 5, gone: true })).toEqual({ ...BINANCE_PAY_FAULT_DEFAULTS, settleAfterMs: 5 });
  });
});
