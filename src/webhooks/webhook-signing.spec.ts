import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { newWebhookSecret, signatureHeader, verifySignature } from './webhook-signing.js';

describe('merchant webhook signing', () => {
  it('makes whsec_ secrets of 32 random bytes (base64url)', () => {
    const a = newWebhookSecret();
    const b = newWebhookSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(a.slice(6), 'base64url')).toHaveLength(32);
    expect(a).not.toBe(b);
  });

  it('signs t + "." + body with HMAC-SHA256 keyed by the secret string (contract §10)', () => {
    const secret = 'whsec_test';
    const body = '{"id":"evt_1","type":"refund.succeeded"}';
    const header = signatureHeader(secret, body, 1_700_000_000);
    const expected = createHmac('sha256', secret).update(`1700000000.${body}`).digest('hex');
    expect(header).toBe(`t=1700000000,v1=${expected}`);
  });

  it('verifies the header, and refuses altered bodies, other secrets, stale timestamps and junk', () => {
    const secret = newWebhookSecret();
    const body = '{"a":1}';
    const now = 1_700_000_000;
    const header = signatureHeader(secret, body, now);
    expect(verifySignature(secret, body, header, now)).toBe(true);
    expect(verifySignature(secret, body, `${header},v1=${'0'.repeat(64)}`, now)).toBe(true);
    expect(verifySignature(secret, '{"a":2}', header, now)).toBe(false);
    expect(verifySignature(newWebhookSecret(), body, header, now)).toBe(false);
    expect(verifySignature(secret, body, header, now + 301)).toBe(false);
    expect(verifySignature(secret, body, undefined, now)).toBe(false);
    expect(verifySignature(secret, body, 't=abc,v1=zz', now)).toBe(false);
    expect(verifySignature(secret, body, `t=${now}`, now)).toBe(false);
  });
});
