import { createHmac, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FaultValidationError } from '../sandbox-faults.js';
import { LEAN_FAULT_DEFAULTS, parseLeanFaultPatch, resolveLeanFaults } from './lean.faults.js';
import {
  LeanError,
  buildTokenClaims,
  ibanWithCheckDigits,
  isValidIban,
  leanWebhookSignature,
  parseCreateRefunds,
  parseLeanJson,
  parseProcessRefunds,
  parseRefundListQuery,
  parseTokenRequest,
  requireScope,
  resolveLeanRoute,
  signJwt,
  verifyAccessToken,
  webhookRetryDelay,
} from './lean.rules.js';

const PAYMENT = '23ff863d-6a00-490b-9ba2-5188dcc5bcac';

function status(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof LeanError) return err.status;
    throw err;
  }
}

describe('Lean rules: create items', () => {
  const one = (amount: string, extra = '') =>
    parseCreateRefunds(
      parseLeanJson(`[{"payment_id":"${PAYMENT}","amount":${amount},"currency":"AED","reason_code":"CUSTOMER_REQUEST"${extra}}]`),
    )[0]!;

  it('reads amounts exactly and keeps at most 2 decimals', () => {
    const ok = one('10.1');
    expect(ok.ok && ok.item.amount.toFixed()).toBe('10.1');
    expect(one('10.10').ok).toBe(true);
    expect(one('1e1').ok).toBe(true);
    for (const bad of ['0', '-1', '1.001', '"5"', 'null', '99999999999999']) {
      const r = one(bad);
      expect(r.ok, bad).toBe(false);
    }
    const missing = parseCreateRefunds(parseLeanJson(`[{"payment_id":"${PAYMENT}","currency":"AED","reason_code":"CUSTOMER_REQUEST"}]`))[0]!;
    expect(!missing.ok && missing.error.status).toBe('MISSING_PARAMETERS');
  });

  it('checks the body is a non-empty array of objects', () => {
    expect(status(() => parseCreateRefunds(parseLeanJson('{}')))).toBe('INVALID_PARAMETERS');
    expect(status(() => parseCreateRefunds(parseLeanJson('[]')))).toBe('INVALID_PARAMETERS');
    expect(parseCreateRefunds(parseLeanJson('[1, "x", null]')).map((c) => c.ok)).toEqual([false, false, false]);
    expect(status(() => parseLeanJson('[{"a":1,"a":2}]'))).toBe('INVALID_PARAMETERS');
    expect(status(() => parseLeanJson(''))).toBe('INVALID_PARAMETERS');
    // A repeated key is refused outright rather than letting one of the values win.
    expect(status(() => one('1', ',"reason_code":"X"'))).toBe('INVALID_PARAMETERS');
    expect(one('1', ',"external_reference":5').ok).toBe(false);
  });

  it('validates process items', () => {
    const items = parseProcessRefunds(parseLeanJson(`[{"refund_id":"${PAYMENT}","status":"APPROVED"},{"refund_id":"x","status":"APPROVED"},{"refund_id":"${PAYMENT}","status":"COMPLETED"}]`));
    expect(items.map((i) => i.ok)).toEqual([true, false, false]);
  });
});

describe('Lean rules: list query', () => {
  it('defaults to page 0 of 50 and bounds size', () => {
    expect(parseRefundListQuery({})).toEqual({ status: undefined, paymentId: undefined, page: 0, size: 50 });
    expect(parseRefundListQuery({ size: '100', page: '3', status: 'APPROVED' })).toMatchObject({ size: 100, page: 3, status: 'APPROVED' });
    for (const q of [{ size: '0' }, { size: '101' }, { page: '-1' }, { status: 'approved' }, { payment_id: 'x' }, { size: ['1', '2'] }]) {
      expect(status(() => parseRefundListQuery(q)), JSON.stringify(q)).toBe('INVALID_PARAMETERS');
    }
  });
});

describe('Lean rules: OAuth2 and tokens', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const opts = { publicKey, kid: 'k1', issuer: 'https://auth', audience: 'https://api' };
  const issue = (nowMs: number, ttl = 60, customerId?: string) =>
    signJwt(buildTokenClaims({ clientId: 'c', issuer: 'https://auth', audience: 'https://api', ttlSeconds: ttl, nowMs, customerId }), 'k1', privateKey);

  it('parses token requests', () => {
    const base = { client_id: 'c', client_secret: 's', grant_type: 'client_credentials', scope: 'api' };
    expect(parseTokenRequest(base)).toEqual({ clientId: 'c', clientSecret: 's', scope: 'api' });
    expect(parseTokenRequest({ ...base, scope: `customer.${PAYMENT}` }).customerId).toBe(PAYMENT);
    expect(status(() => parseTokenRequest({ ...base, scope: undefined }))).toBe('MISSING_PARAMETERS');
    expect(status(() => parseTokenRequest({ ...base, scope: 'customer.x' }))).toBe('INVALID_PARAMETERS');
    expect(status(() => parseTokenRequest({ ...base, grant_type: 'password' }))).toBe('INVALID_PARAMETERS');
    expect(status(() => parseTokenRequest({ ...base, client_id: ['a', 'b'] }))).toBe('INVALID_PARAMETERS');
  });

  it('verifies signature, issuer, audience, kid and expiry', () => {
    const now = Date.now();
    const token = issue(now);
    const ok = verifyAccessToken(`Bearer ${token}`, { ...opts, nowMs: now });
    expect(ok.clientId).toBe('c');
    expect(() => requireScope(ok, 'payout.write')).not.toThrow();
    expect(status(() => verifyAccessToken(`Bearer ${token}`, { ...opts, nowMs: now + 61_000 }))).toBe('UNAUTHORIZED');
    expect(status(() => verifyAccessToken(`Bearer ${token}`, { ...opts, audience: 'x', nowMs: now }))).toBe('UNAUTHORIZED');
    expect(status(() => verifyAccessToken(`Bearer ${token}`, { ...opts, kid: 'k2', nowMs: now }))).toBe('UNAUTHORIZED');
    expect(status(() => verifyAccessToken(undefined, { ...opts, nowMs: now }))).toBe('UNAUTHORIZED');
    expect(status(() => verifyAccessToken(`Basic ${token}`, { ...opts, nowMs: now }))).toBe('UNAUTHORIZED');
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(status(() => verifyAccessToken(`Bearer ${token}`, { ...opts, publicKey: other.publicKey, nowMs: now }))).toBe('UNAUTHORIZED');
    const customer = verifyAccessToken(`Bearer ${issue(now, 60, PAYMENT)}`, { ...opts, nowMs: now });
    expect(status(() => requireScope(customer, 'payout.read'))).toBe('INSUFFICIENT_ACCESS_LEVEL');
    expect(() => requireScope(customer, 'payment.read')).not.toThrow();
  });
});

describe('Lean rules: routes, webhooks, IBANs, faults', () => {
  it('resolves routes, wrong methods and unknown paths', () => {
    expect(resolveLeanRoute('POST', '/sandbox/lean/payouts/refunds')).toEqual({ kind: 'api', scope: 'payout.write' });
    expect(resolveLeanRoute('GET', `/sandbox/lean/payments/v1/${PAYMENT}`)).toEqual({ kind: 'api', scope: 'payment.read' });
    expect(resolveLeanRoute('DELETE', '/sandbox/lean/payouts/refunds')).toBe('wrong_method');
    expect(resolveLeanRoute('GET', '/sandbox/lean/nothing')).toBeUndefined();
    expect(resolveLeanRoute('POST', '/sandbox/lean-auth/oauth2/token')).toEqual({ kind: 'token' });
  });

  it('signs webhooks as sha512=<hex HMAC-SHA512> and backs off 0.2 s ... 36 s', () => {
    expect(leanWebhookSignature('s', '{"a":1}')).toBe(`sha512=${createHmac('sha512', 's').update('{"a":1}').digest('hex')}`);
    expect([1, 2, 3, 4, 5, 6, 7].map(webhookRetryDelay)).toEqual([200, 400, 1_000, 2_000, 12_000, 36_000, undefined]);
  });

  it('makes valid IBANs', () => {
    expect(isValidIban('AE070331234567890123456')).toBe(true); // the UAE example IBAN
    expect(isValidIban(ibanWithCheckDigits('SA', '80000000608010167519'))).toBe(true);
    expect(ibanWithCheckDigits('SA', '80000000608010167519')).toBe('SA0380000000608010167519'); // the KSA example IBAN
  });

  it('validates fault patches', () => {
    expect(parseLeanFaultPatch({ webhookUrl: null, successStatus: 'PAID', partialBatch: true })).toEqual({
      webhookUrl: null,
      successStatus: 'PAID',
      partialBatch: true,
    });
    for (const bad of [{ x: 1 }, { failRate: 2 }, { successStatus: 'FAILED' }, { tokenTtlSeconds: 0.5 }, null]) {
      expect(() => parseLeanFaultPatch(bad), JSON.stringify(bad)).toThrow(FaultValidationError);
    }
    expect(resolveLeanFaults({ webhookUrl: null, stale: 1 }, { ...LEAN_FAULT_DEFAULTS, webhookUrl: 'http://x' }).webhookUrl).toBeNull();
  });
});
