import { createHash, createPrivateKey, createPublicKey, KeyObject, sign, verify } from 'node:crypto';
import { keyOf } from '../key-objects.js';

/**
 * Cobo WaaS 2.0 API signatures (providers.md §2.4), with node:crypto only. Shared by the
 * adapter (signing requests, verifying responses and webhooks) and the sandbox emulator.
 *
 * Requests: Ed25519 over SHA256(SHA256("METHOD|PATH|NONCE|QUERY|BODY")), the inner hash's
 * raw 32 bytes fed to the outer one. Responses and webhooks: the same digest of
 * "rawBody|timestamp", signed with Cobo's key.
 */

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** The key of a hex seed, parsed once per process (key-objects.ts). */
export function ed25519PrivateKey(seedHex: string): KeyObject {
  return keyOf(`ed25519-private:${seedHex}`, () =>
    createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(seedHex, 'hex')]), format: 'der', type: 'pkcs8' }),
  );
}

/** The key of a hex public key, parsed once per process (key-objects.ts). */
export function ed25519PublicKey(publicHex: string): KeyObject {
  return keyOf(`ed25519-public:${publicHex}`, () =>
    createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, Buffer.from(publicHex, 'hex')]), format: 'der', type: 'spki' }),
  );
}

/** The hex public key (Biz-Api-Key) of a hex seed. */
export function ed25519PublicHex(seedHex: string): string {
  const der = createPublicKey(ed25519PrivateKey(seedHex)).export({ format: 'der', type: 'spki' });
  return der.subarray(der.length - 32).toString('hex');
}

/** SHA256(SHA256(text)), the outer hash over the inner hash's raw bytes. */
export function doubleSha256(text: string | Buffer): Buffer {
  const inner = createHash('sha256').update(text).digest();
  return createHash('sha256').update(inner).digest();
}

export function coboStringToSign(method: string, path: string, nonce: string, query: string, body: string): string {
  return `${method.toUpperCase()}|${path}|${nonce}|${query}|${body}`;
}

export function signCoboRequest(seedHex: string, method: string, path: string, nonce: string, query: string, body: string): string {
  return sign(null, doubleSha256(coboStringToSign(method, path, nonce, query, body)), ed25519PrivateKey(seedHex)).toString('hex');
}

export function verifyCoboRequest(
  publicHex: string,
  method: string,
  path: string,
  nonce: string,
  query: string,
  body: string,
  signatureHex: string,
): boolean {
  return verifyDigest(publicHex, doubleSha256(coboStringToSign(method, path, nonce, query, body)), signatureHex);
}

/** Response and webhook signature: over `rawBody + "|" + timestamp`, raw bytes as received. */
export function coboResponseDigest(rawBody: Buffer | string, timestamp: string): Buffer {
  const body = Buffer.isBuffer(rawBody) ? rawBody : Buffer.from(rawBody, 'utf8');
  return doubleSha256(Buffer.concat([body, Buffer.from(`|${timestamp}`, 'utf8')]));
}

export function signCoboResponse(seedHex: string, rawBody: Buffer | string, timestamp: string): string {
  return sign(null, coboResponseDigest(rawBody, timestamp), ed25519PrivateKey(seedHex)).toString('hex');
}

export function verifyCoboResponse(publicHex: string, rawBody: Buffer | string, timestamp: string, signatureHex: string): boolean {
  return verifyDigest(publicHex, coboResponseDigest(rawBody, timestamp), signatureHex);
}

function verifyDigest(publicHex: string, digest: Buffer, signatureHex: string): boolean {
  if (!/^[0-9a-fA-F]{128}$/.test(signatureHex) || !/^[0-9a-fA-F]{64}$/.test(publicHex)) return false;
  try {
    return verify(null, digest, ed25519PublicKey(publicHex), Buffer.from(signatureHex, 'hex'));
  } catch {
    return false;
  }
}

/** Headers of a signed Cobo API call. */
export function coboHeaders(
  seedHex: string,
  method: string,
  path: string,
  query: string,
  body: string,
  now = Date.now(),
): Record<string, string> {
  const nonce = String(now);
  return {
    'Biz-Api-Key': ed25519PublicHex(seedHex),
    'Biz-Api-Nonce': nonce,
    'Biz-Api-Signature': signCoboRequest(seedHex, method, path, nonce, query, body),
  };
}
