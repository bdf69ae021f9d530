import { describe, expect, it } from 'vitest';
import type { RefundCommand } from '../provider.js';
import { LeanAdapter } from './lean.adapter.js';
import type { LeanCall, LeanClient } from './lean.client.js';

const cmd: RefundCommand = {
  refundId: 'r1',
  providerRequestId: 'ours',
  providerRefundId: null,
  paymentId: '6f1c1a55-6d0b-4c6a-9d5e-2b8f0f3c9a11',
  amount: '5',
  currency: 'AED',
  createdAt: new Date(),
  reason: 'other',
  description: null,
  options: {},
  paymentData: {},
};

/** A Lean whose list answers are scripted: each call returns the next page function's result. */
function leanWith(list: (page: number, size: number) => { content: unknown[]; page: Record<string, unknown> }) {
  const calls: string[] = [];
  const client = {
    async request(method: string, path: string, query: URLSearchParams | null, body?: string): Promise<LeanCall> {
      calls.push(`${method} ${path}${query ? `?${query}` : ''}${body ? ` ${body}` : ''}`);
      if (method === 'GET') {
        const page = Number(query?.get('page'));
        return { kind: 'answer', ok: true, httpStatus: 200, body: list(page, Number(query?.get('size'))), latencyMs: 1 };
      }
      return { kind: 'answer', ok: true, httpStatus: 200, body: [{ refund_id: 'x', status: 'APPROVED' }], latencyMs: 1 };
    },
  } as unknown as LeanClient;
  return { adapter: new LeanAdapter(client), calls };
}

const other = (i: number) => ({ refund_id: `o${i}`, external_reference: `other-${i}`, status: 'COMPLETED', payment_id: cmd.paymentId });

describe('LeanAdapter list search', () => {
  it('concludes absence only after reading every page it asked for', async () => {
    const { adapter, calls } = leanWith((page) => ({ content: [other(page)], page: { number: page, size: 100, total_pages: 3 } }));
    expect((await adapter.queryRefund(cmd)).outcome.kind).toBe('not_found');
    expect(calls).toHaveLength(3);
  });

  it('does not conclude absence when the answer does not echo the paging asked for', async () => {
    // A Lean that caps pages at 50 items, or ignores `page`: nothing proves the search was complete.
    const capped = leanWith((page) => ({ content: [other(page)], page: { number: page, size: 50, total_pages: 1 } }));
    expect((await capped.adapter.queryRefund(cmd)).outcome.kind).toBe('unknown');
    const ignoresPage = leanWith(() => ({ content: [other(0)], page: { number: 0, size: 100, total_pages: 3 } }));
    expect((await ignoresPage.adapter.queryRefund(cmd)).outcome.kind).toBe('unknown');
    const noPage = leanWith(() => ({ content: [], page: {} }));
    expect((await noPage.adapter.queryRefund(cmd)).outcome.kind).toBe('unknown');
  });

  it('finds ours by external_reference on any page, and approves it if still CREATED', async () => {
    const { adapter, calls } = leanWith((page) => ({
      content: page === 1 ? [{ refund_id: 'mine', external_reference: 'ours', status: 'CREATED', payment_id: 'ANY' }] : [other(page)],
      page: { number: page, size: 100, total_pages: 2 },
    }));
    const res = await adapter.queryRefund(cmd);
    expect(res.outcome).toMatchObject({ kind: 'pending', update: { providerRefundId: 'mine' } });
    expect(calls.at(-1)).toBe('PUT /payouts/refunds [{"refund_id":"mine","status":"APPROVED"}]');
  });

  it('approves nothing when two refunds carry our reference', async () => {
    const { adapter, calls } = leanWith((page) => ({
      content: [
        { refund_id: 'a', external_reference: 'ours', status: 'CREATED' },
        { refund_id: 'b', external_reference: 'ours', status: 'CREATED' },
      ],
      page: { number: page, size: 100, total_pages: 1 },
    }));
    expect((await adapter.queryRefund(cmd)).outcome.kind).toBe('unknown');
    expect(calls.filter((c) => c.startsWith('PUT'))).toEqual([]);
  });

  it('canonicalises Lean payment ids and requires UUIDs', () => {
    const { adapter } = leanWith(() => ({ content: [], page: {} }));
    expect(adapter.normalizePaymentId('6F1C1A55-6D0B-4C6A-9D5E-2B8F0F3C9A11')).toBe('6f1c1a55-6d0b-4c6a-9d5e-2b8f0f3c9a11');
    expect(adapter.validateCreate({ paymentId: 'not-a-uuid', amount: '1', currency: 'AED', options: {} })[0].field).toBe('paymentId');
  });
});
