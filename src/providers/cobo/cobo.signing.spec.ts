import { describe, expect, it } from 'vitest';
import {
  coboHeaders,
  ed25519PublicHex,
  signCoboRequest,
  signCoboResponse,
  verifyCoboRequest,
  verifyCoboResponse,
} from './cobo.signing.js';

// RFC 8032 test vector 1 key pair.
const SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const PUBLIC = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const BODY = '{"request_id":"rf-7f3c","payable_amount":"12.50"}';
// Computed independently with OpenSSL:
//   printf 'POST|/v2/payments/refunds|1700000000000||<BODY>' | openssl dgst -sha256 -binary \
//     | openssl dgst -sha256 -binary | openssl pkeyutl -sign -inkey seed.pem -rawin
const KNOWN_SIGNATURE =
  'c86ced55cad307cadff3c16fc2288fcd4ab277d865f65295b796e7f82053841cd168050e97d197b7628833e55303321cc36d70d6692761154d7dd6715ab55e0e';

describe('Cobo signing', () => {
  it('derives the public key from the seed', () => {
    expect(ed25519PublicHex(SEED)).toBe(PUBLIC);
  });

  it('signs METHOD|PATH|NONCE|QUERY|BODY byte-exactly (double SHA-256, Ed25519)', () => {
    expect(signCoboRequest(SEED, 'post', '/v2/payments/refunds', '1700000000000', '', BODY)).toBe(KNOWN_SIGNATURE);
    expect(verifyCoboRequest(PUBLIC, 'POST', '/v2/payments/refunds', '1700000000000', '', BODY, KNOWN_SIGNATURE)).toBe(true);
  });

  it('rejects any change to the signed parts', () => {
    const v = (method: string, path: string, nonce: string, query: string, body: string) =>
      verifyCoboRequest(PUBLIC, method, path, nonce, query, body, KNOWN_SIGNATURE);
    expect(v('POST', '/v2/payments/refunds', '1700000000000', '', BODY.replace('12.50', '12.51'))).toBe(false);
    expect(v('POST', '/payments/refunds', '1700000000000', '', BODY)).toBe(false);
    expect(v('POST', '/v2/payments/refunds', '1700000000001', '', BODY)).toBe(false);
    expect(v('POST', '/v2/payments/refunds', '1700000000000', 'a=1', BODY)).toBe(false);
    expect(v('PUT', '/v2/payments/refunds', '1700000000000', '', BODY)).toBe(false);
    expect(verifyCoboRequest(PUBLIC, 'POST', '/v2/payments/refunds', '1700000000000', '', BODY, 'zz')).toBe(false);
  });

  it('signs and verifies responses over rawBody|timestamp', () => {
    const sig = signCoboResponse(SEED, BODY, '1700000000123');
    expect(verifyCoboResponse(PUBLIC, Buffer.from(BODY), '1700000000123', sig)).toBe(true);
    expect(verifyCoboResponse(PUBLIC, Buffer.from(BODY), '1700000000124', sig)).toBe(false);
    expect(verifyCoboResponse(PUBLIC, Buffer.from(BODY + ' '), '1700000000123', sig)).toBe(false);
    expect(verifyCoboResponse('00'.repeat(32), Buffer.from(BODY), '1700000000123', sig)).toBe(false);
  });

  it('builds the three Biz-Api headers', () => {
    const h = coboHeaders(SEED, 'GET', '/v2/payments/refunds', 'request_id=abc', '', 1700000000000);
    expect(h['Biz-Api-Key']).toBe(PUBLIC);
    expect(h['Biz-Api-Nonce']).toBe('1700000000000');
    expect(verifyCoboRequest(PUBLIC, 'GET', '/v2/payments/refunds', '1700000000000', 'request_id=abc', '', h['Biz-Api-Signature'])).toBe(true);
  });
});
