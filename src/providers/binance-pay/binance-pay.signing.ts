import { createHash, createHmac, createVerify, createSign, randomBytes, timingSafeEqual } from 'node:crypto';
import { privateKeyOf, publicKeyOf } from '../key-objects.js';

/**
 * Binance Pay merchant API signatures (providers.md §1.1, §1.3). Pure functions, shared
 * by the adapter (signing requests, verifying webhooks) and the sandbox emulator.
 */

/** `timestamp + "\n" + nonce + "\n" + body + "\n"`: LF only, trailing LF required. */
export function binancePayload(timestamp: string, nonce: string, body: string): string {
  return `${timestamp}\n${nonce}\n${body}\n`;
}

/** Uppercase hex HMAC-SHA512 of the payload, keyed with the API secret. */
export function signBinanceRequest(secretKey: string, timestamp: string, nonce: string, body: string): string {
  return createHmac('sha512', secretKey).update(binancePayload(timestamp, nonce, body), 'utf8').digest('hex').toUpperCase();
}

export function verifyBinanceRequest(
  secretKey: string,
  timestamp: string,
  nonce: string,
  body: string,
  signature: string,
): boolean {
  const expected = Buffer.from(signBinanceRequest(secretKey, timestamp, nonce, body), 'utf8');
  const given = Buffer.from(signature, 'utf8');
  // Uppercase only: the docs say uppercase hex, and a lowercase signature is a client bug.
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** 32 alphanumeric characters (the official connector sends lowercase hex). */
export function binanceNonce(): string {
  return randomBytes(16).toString('hex');
}

/** Headers of a signed merchant API call. */
export function binanceHeaders(apiKey: string, secretKey: string, body: string, now = Date.now()): Record<string, string> {
  const timestamp = String(now);
  const nonce = binanceNonce();
  return {
    'content-type': 'application/json',
    'BinancePay-Timestamp': timestamp,
    'BinancePay-Nonce': nonce,
    'BinancePay-Certificate-SN': apiKey,
    'BinancePay-Signature': signBinanceRequest(secretKey, timestamp, nonce, body),
  };
}

/** Webhooks: base64 RSA PKCS#1 v1.5 SHA-256 over the same payload built from the raw body. */
export function signBinanceWebhook(privateKeyPem: string, timestamp: string, nonce: string, rawBody: string): string {
  return createSign('RSA-SHA256').update(binancePayload(timestamp, nonce, rawBody), 'utf8').sign(privateKeyOf(privateKeyPem), 'base64');
}

export function verifyBinanceWebhook(
  publicKeyPem: string,
  timestamp: string,
  nonce: string,
  rawBody: Buffer | string,
  signatureBase64: string,
): boolean {
  try {
    const payload = Buffer.concat([
      Buffer.from(`${timestamp}\n${nonce}\n`, 'utf8'),
      Buffer.isBuffer(rawBody) ? rawBody : Buffer.from(rawBody, 'utf8'),
      Buffer.from('\n', 'utf8'),
    ]);
    return createVerify('RSA-SHA256').update(payload).verify(publicKeyOf(publicKeyPem), Buffer.from(signatureBase64, 'base64'));
  } catch {
    return false;
  }
}

/** certSerial: the MD5 of the public key, as the webhook's BinancePay-Certificate-SN. */
export function binanceCertSerial(publicKeyPem: string): string {
  return createHash('md5').update(publicKeyPem, 'utf8').digest('hex');
}
