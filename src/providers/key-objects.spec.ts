import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keyOf, privateKeyOf, publicKeyOf } from './key-objects.js';

describe('key objects', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519', {
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });

  it('parses a PEM once and hands back the same key object, which signs and verifies', () => {
    const a = privateKeyOf(privateKey);
    expect(privateKeyOf(privateKey)).toBe(a);
    expect(publicKeyOf(publicKey)).toBe(publicKeyOf(publicKey));
    const signature = sign(null, Buffer.from('payload'), a);
    expect(verify(null, Buffer.from('payload'), publicKeyOf(publicKey), signature)).toBe(true);
    expect(verify(null, Buffer.from('other'), publicKeyOf(publicKey), signature)).toBe(false);
  });

  it('keeps private and public keys of one text apart', () => {
    expect(privateKeyOf(privateKey).type).toBe('private');
    expect(publicKeyOf(privateKey).type).toBe('public');
  });

  it('throws on text that is no key, and caches nothing for it', () => {
    expect(() => publicKeyOf('not a key')).toThrow();
    expect(() => publicKeyOf('not a key')).toThrow();
  });

  it('stays bounded: old entries are parsed again after many others', () => {
    let made = 0;
    const make = () => {
      made++;
      return privateKeyOf(privateKey);
    };
    keyOf('bounded:first', make);
    for (let i = 0; i < 200; i++) keyOf(`bounded:${i}`, make);
    const before = made;
    keyOf('bounded:first', make);
    expect(made).toBe(before + 1);
  });
});
