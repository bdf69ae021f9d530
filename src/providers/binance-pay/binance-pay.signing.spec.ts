import { createHmac, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  binanceNonce,
  binancePayload,
  signBinanceRequest,
  signBinanceWebhook,
  verifyBinanceRequest,
  verifyBinanceWebhook,
} from './binance-pay.signing.js';

describe('Binance Pay signing', () => {
  it('signs ts\\nnonce\\nbody\\n with uppercase hex HMAC-SHA512', () => {
    const body = '{"refundRequestId":"r1"}';
    const expected = createHmac('sha512', 'secret').update(`1700000000000\nabc\n${body}\n`).digest('hex').toUpperCase();
    expect(signBinanceRequest('secret', '1700000000000', 'abc', body)).toBe(expected);
    expect(binancePayload('1', 'n', '{}')).toBe('1\nn\n{}\n');
  });

  it('verifies only the exact uppercase signature over the exact body', () => {
    const sig = signBinanceRequest('secret', '1', 'n', '{"a":1}');
    expect(verifyBinanceRequest('secret', '1', 'n', '{"a":1}', sig)).toBe(true);
    expect(verifyBinanceRequest('secret', '1', 'n', '{"a":1}', sig.toLowerCase())).toBe(false);
    expect(verifyBinanceRequest('secret', '1', 'n', '{"a": 1}', sig)).toBe(false);
    expect(verifyBinanceRequest('other', '1', 'n', '{"a":1}', sig)).toBe(false);
  });

  it('makes 32-character alphanumeric nonces', () => {
    expect(binanceNonce()).toMatch(/^[a-zA-Z0-9]{32}$/);
  });

  it('verifies RSA-SHA256 webhooks over the raw bytes with the trailing LF', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const raw = '{"bizType":"PAY_REFUND","bizId":123289163323899904123}';
    const sig = signBinanceWebhook(privateKey, '1', 'nonce', raw);
    expect(verifyBinanceWebhook(publicKey, '1', 'nonce', Buffer.from(raw), sig)).toBe(true);
    expect(verifyBinanceWebhook(publicKey, '1', 'nonce', Buffer.from(raw.replace('123', '124')), sig)).toBe(false);
    expect(verifyBinanceWebhook(publicKey, '2', 'nonce', Buffer.from(raw), sig)).toBe(false);
    expect(verifyBinanceWebhook(publicKey, '1', 'nonce', Buffer.from(raw), 'garbage')).toBe(false);
  });
});
