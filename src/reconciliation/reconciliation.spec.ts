import { describe, expect, it } from 'vitest';
import type { ProviderRefundPage, ProviderRefundRecord, RefundProvider } from '../providers/provider.js';
import { compareRefund, inWindow, looksLikeOurRequestId } from './compare.js';
import { ProviderGaveUp, recordSourceFor } from './record-sources.js';
import { dailyWindow, ReconciliationSettings, retryDelayMs } from './reconciliation-settings.js';
import { parseWindow } from './reconciliation.service.js';

function theirs(over: Partial<ProviderRefundRecord> = {}): ProviderRefundRecord {
  return {
    providerRefundId: 'R1',
    providerRequestId: 'a'.repeat(32),
    paymentId: 'P1',
    status: 'succeeded',
    providerStatus: 'Completed',
    amount: '12.50',
    refundedAmount: '12.50',
    currency: 'USDT',
    createdAt: new Date('2026-01-01T10:00:00Z'),
    ...over,
  };
}

describe('compareRefund', () => {
  it('agrees on equal decimals written differently', () => {
    expect(compareRefund({ status: 'succeeded', amount: '12.5', refundedAmount: '12.5' }, theirs())).toEqual([]);
  });

  it('reports a final status that differs; canceled equals failed (no money moved)', () => {
    expect(compareRefund({ status: 'succeeded', amount: '12.5', refundedAmount: '12.5' }, theirs({ status: 'failed' }))).toEqual([
      'status_mismatch',
    ]);
    expect(compareRefund({ status: 'canceled', amount: '12.5', refundedAmount: '0' }, theirs({ status: 'failed' }))).toEqual([]);
    expect(compareRefund({ status: 'succeeded', amount: '12.5', refundedAmount: '12.5' }, theirs({ status: 'partially_succeeded' }))).toEqual([
      'status_mismatch',
    ]);
  });

  it('in flight on our side is not a mismatch; final on ours while theirs is in flight is', () => {
    expect(compareRefund({ status: 'processing', amount: '12.5', refundedAmount: '0' }, theirs({ status: 'failed' }))).toEqual([]);
    expect(compareRefund({ status: 'succeeded', amount: '12.5', refundedAmount: '12.5' }, theirs({ status: 'processing' }))).toEqual([
      'status_mismatch',
    ]);
  });

  it('reports amounts that differ, and the paid part of partial refunds', () => {
    expect(compareRefund({ status: 'succeeded', amount: '12.51', refundedAmount: '12.51' }, theirs())).toEqual(['amount_mismatch']);
    expect(
      compareRefund(
        { status: 'partially_succeeded', amount: '12.5', refundedAmount: '6' },
        theirs({ status: 'partially_succeeded', refundedAmount: '6.25' }),
      ),
    ).toEqual(['amount_mismatch']);
    expect(compareRefund({ status: 'failed', amount: '12.5', refundedAmount: '0' }, theirs({ amount: null, status: 'succeeded' }))).toEqual([
      'status_mismatch',
    ]);
  });

  it('window and request id helpers', () => {
    const from = new Date('2026-01-01T00:00:00Z');
    const to = new Date('2026-01-02T00:00:00Z');
    expect(inWindow(from, from, to)).toBe(true);
    expect(inWindow(to, from, to)).toBe(false);
    expect(inWindow(new Date(to.getTime() + 500), from, to, 1_000)).toBe(true);
    expect(inWindow(null, from, to)).toBe(true);
    expect(looksLikeOurRequestId('0123456789abcdef0123456789abcdef')).toBe(true);
    expect(looksLikeOurRequestId('rf-7f3c')).toBe(false);
  });
});

describe('parseWindow', () => {
  const now = new Date('2026-03-01T00:00:00Z');
  it('accepts offsets and bare dates, at most 31 days, not starting in the future', () => {
    expect(parseWindow('2026-01-01', '2026-02-01T00:00:00Z', now)).toEqual({
      from: new Date('2026-01-01T00:00:00Z'),
      to: new Date('2026-02-01T00:00:00Z'),
    });
    expect(parseWindow('2026-01-01T04:00:00+04:00', '2026-01-02T00:00:00Z', now).from.toISOString()).toBe('2026-01-01T00:00:00.000Z');
    for (const [from, to] of [
      ['2026-01-01T00:00:00', '2026-01-02T00:00:00Z'],
      ['2026-01-02', '2026-01-01'],
      ['2026-01-01', '2026-02-01T00:00:01Z'],
      ['2026-04-01', '2026-04-02'],
      ['2026-13-01', '2026-12-02'],
    ]) {
      expect(() => parseWindow(from, to, now)).toThrow();
    }
  });
});

describe('settings', () => {
  it('parses RECONCILIATION_DAILY_AT and rejects bad values naming the variable', () => {
    expect(ReconciliationSettings.fromEnv({ RECONCILIATION_DAILY_AT: '02:30' }).dailyAt).toEqual({ hour: 2, minute: 30 });
    expect(ReconciliationSettings.fromEnv({}).dailyAt).toBeUndefined();
    expect(() => ReconciliationSettings.fromEnv({ RECONCILIATION_DAILY_AT: '24:00' })).toThrow(/RECONCILIATION_DAILY_AT/);
    expect(() => ReconciliationSettings.fromEnv({ RECONCILIATION_CONCURRENCY: '0' })).toThrow(/RECONCILIATION_CONCURRENCY/);
  });

  it('the daily window is the previous UTC day, once past the time', () => {
    const at = { hour: 2, minute: 0 };
    expect(dailyWindow(new Date('2026-01-10T01:59:59Z'), at)).toBeUndefined();
    expect(dailyWindow(new Date('2026-01-10T02:00:00Z'), at)).toEqual({
      from: new Date('2026-01-09T00:00:00Z'),
      to: new Date('2026-01-10T00:00:00Z'),
    });
  });

  it('retry delays grow, are capped and honour Retry-After', () => {
    expect(retryDelayMs(1, 1_000, undefined, () => 0.5)).toBe(1_000);
    expect(retryDelayMs(3, 1_000, undefined, () => 0.5)).toBe(4_000);
    expect(retryDelayMs(30, 1_000, undefined, () => 0.5)).toBe(30_000);
    expect(retryDelayMs(1, 10, 5_000, () => 0.5)).toBe(5_000);
  });
});

describe('listing record sources', () => {
  const settings = Object.assign(new ReconciliationSettings(), { slackMs: 60_000, maxPages: 10, retryBaseMs: 1, providerRetries: 1 });
  const window = { from: new Date('2026-01-10T00:00:00Z'), to: new Date('2026-01-11T00:00:00Z') };
  const at = (iso: string) => theirs({ createdAt: new Date(iso) });

  function fakeAdapter(pages: ProviderRefundPage[]): RefundProvider & { asked: (string | null)[] } {
    const asked: (string | null)[] = [];
    return {
      name: 'cobo',
      asked,
      listRefunds: async (_w: unknown, cursor: string | null) => {
        asked.push(cursor);
        return pages[cursor === null ? 0 : Number(cursor)] ?? { kind: 'page', records: [], nextCursor: null };
      },
      lookupRefund: async () => ({ kind: 'not_found' }),
    } as unknown as RefundProvider & { asked: (string | null)[] };
  }

  async function walk(adapter: RefundProvider) {
    const source = recordSourceFor(adapter, settings, () => undefined)!;
    const seen: ProviderRefundRecord[][] = [];
    for await (const page of source.pages!(window)) seen.push(page);
    return seen;
  }

  it('stops once newest-first records are older than the window', async () => {
    const adapter = fakeAdapter([
      { kind: 'page', records: [at('2026-01-10T12:00:00Z'), at('2026-01-10T06:00:00Z')], nextCursor: '1' },
      { kind: 'page', records: [at('2026-01-09T12:00:00Z')], nextCursor: '2' },
      { kind: 'page', records: [at('2026-01-08T12:00:00Z')], nextCursor: null },
    ]);
    expect(await walk(adapter)).toHaveLength(2);
    expect(adapter.asked).toEqual([null, '1']);
  });

  it('reads to the end when the order is not newest first', async () => {
    const adapter = fakeAdapter([
      { kind: 'page', records: [at('2026-01-09T12:00:00Z')], nextCursor: '1' },
      { kind: 'page', records: [at('2026-01-10T12:00:00Z')], nextCursor: '2' },
      { kind: 'page', records: [at('2026-01-08T12:00:00Z')], nextCursor: null },
    ]);
    expect(await walk(adapter)).toHaveLength(3);
  });

  it('retries a failing page, then gives up with the reason', async () => {
    let calls = 0;
    const adapter = {
      name: 'lean',
      listRefunds: async () => {
        calls++;
        return { kind: 'error', reason: 'HTTP 500' };
      },
      lookupRefund: async () => ({ kind: 'not_found' }),
    } as unknown as RefundProvider;
    await expect(walk(adapter)).rejects.toThrow(ProviderGaveUp);
    await expect(walk(adapter)).rejects.toThrow(/lean refund list page 1 failed after 2 attempts: HTTP 500/);
    expect(calls).toBe(4);
  });

  it('bounds the walk by maxPages', async () => {
    const endless = {
      name: 'cobo',
      listRefunds: async (_w: unknown, cursor: string | null) => ({
        kind: 'page',
        records: [at('2026-01-10T12:00:00Z')],
        nextCursor: String(Number(cursor ?? 0) + 1),
      }),
      lookupRefund: async () => ({ kind: 'not_found' }),
    } as unknown as RefundProvider;
    await expect(walk(endless)).rejects.toThrow(/longer than 10 pages/);
  });
});
