import { describe, expect, it, vi } from 'vitest';
import { Problem } from '../common/problem.js';
import { lookupWithRetries } from './provider-http.js';
import type { PaymentLookup } from './provider.js';
import { assertWithinWindow, parseSignedTime } from './webhook-window.js';

describe('webhook replay window', () => {
  const window = { pastMs: 300_000, futureMs: 300_000 };
  const now = Date.parse('2026-05-01T12:00:00Z');

  it('reads Unix milliseconds and ISO date-times with an offset, nothing else', () => {
    expect(parseSignedTime(String(now))).toBe(now);
    expect(parseSignedTime(now)).toBe(now);
    expect(parseSignedTime('2026-05-01T12:00:00.123456Z')).toBe(now + 123);
    expect(parseSignedTime('2026-05-01T16:00:00+04:00')).toBe(now);
    for (const bad of ['', ' ', '2026-05-01', '2026-05-01T12:00:00', 'yesterday', '1e12', '-5', null, undefined, {}, Number.NaN]) {
      expect(parseSignedTime(bad), String(bad)).toBeUndefined();
    }
  });

  it('accepts the window’s edges and refuses beyond them, naming the distance', () => {
    expect(() => assertWithinWindow('X', 'ts', String(now - 300_000), window, now)).not.toThrow();
    expect(() => assertWithinWindow('X', 'ts', String(now + 300_000), window, now)).not.toThrow();
    const stale = () => assertWithinWindow('X', 'ts', String(now - 300_001), window, now);
    expect(stale).toThrow(Problem);
    expect(stale).toThrow(/ts is 300 s old/);
    expect(() => assertWithinWindow('X', 'ts', String(now + 400_000), window, now)).toThrow(/400 s in the future/);
    expect(() => assertWithinWindow('X', 'ts', 'nope', window, now)).toThrow(/without a readable ts/);
  });
});

describe('lookupWithRetries', () => {
  const found: PaymentLookup = { kind: 'found', payment: { paymentId: 'p', amount: '1', currency: 'USDT', providerStatus: 'PAID', refundable: true, data: {} } };

  it('asks again after transient no-answers, at most three times in all', async () => {
    const lookup = vi
      .fn<() => Promise<PaymentLookup>>()
      .mockResolvedValueOnce({ kind: 'unavailable', reason: 'cut off', transient: true })
      .mockResolvedValueOnce({ kind: 'unavailable', reason: '429', transient: true, retryAfterMs: 300 })
      .mockResolvedValueOnce(found);
    const started = Date.now();
    expect(await lookupWithRetries(lookup)).toBe(found);
    expect(lookup).toHaveBeenCalledTimes(3);
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    const down = vi.fn<() => Promise<PaymentLookup>>().mockResolvedValue({ kind: 'unavailable', reason: '500', transient: true });
    expect((await lookupWithRetries(down)).kind).toBe('unavailable');
    expect(down).toHaveBeenCalledTimes(3);
  });

  it('does not repeat answers that will not change, nor wait out a long Retry-After', async () => {
    for (const answer of [
      { kind: 'not_found' } as const,
      { kind: 'unavailable', reason: 'our credentials' } as const,
      { kind: 'unavailable', reason: '429', transient: true, retryAfterMs: 30_000 } as const,
    ]) {
      const lookup = vi.fn<() => Promise<PaymentLookup>>().mockResolvedValue(answer);
      expect(await lookupWithRetries(lookup)).toEqual(answer);
      expect(lookup).toHaveBeenCalledTimes(1);
    }
  });
});
