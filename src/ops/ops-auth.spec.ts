import { describe, expect, it } from 'vitest';
import { presentedKey } from './ops-auth.js';

const basic = (value: string) => `Basic ${Buffer.from(value).toString('base64')}`;

describe('presentedKey', () => {
  it('takes a Bearer key', () => {
    expect(presentedKey('Bearer rk_ops_abc')).toBe('rk_ops_abc');
  });

  it('takes the Basic password, or the user name when the password is empty', () => {
    expect(presentedKey(basic('ops:rk_ops_abc'))).toBe('rk_ops_abc');
    expect(presentedKey(basic('rk_ops_abc:'))).toBe('rk_ops_abc');
  });

  it('rejects anything else', () => {
    expect(presentedKey(undefined)).toBeUndefined();
    expect(presentedKey('')).toBeUndefined();
    expect(presentedKey('Token abc')).toBeUndefined();
    expect(presentedKey(basic('no-colon'))).toBeUndefined();
    expect(presentedKey(basic(':'))).toBeUndefined();
    expect(presentedKey(basic('a:with space'))).toBeUndefined();
    expect(presentedKey(['Bearer a'])).toBeUndefined();
  });
});
