import { describe, expect, it } from 'vitest';
import { Batcher } from './batcher.js';

/** A run function whose batches finish only when the test says so. */
function controlled<I>() {
  const calls: Array<{ items: I[]; finish: (outs?: unknown[]) => void; fail: (err: Error) => void }> = [];
  const run = (items: I[]) =>
    new Promise<unknown[]>((resolve, reject) => {
      calls.push({ items, finish: (outs) => resolve(outs ?? items.map((i) => `done:${String(i)}`)), fail: reject });
    });
  return { calls, run };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('Batcher', () => {
  it('sends a lone item at once, and items arriving meanwhile as one batch once a slot frees', async () => {
    const { calls, run } = controlled<string>();
    const sizes: number[] = [];
    const b = new Batcher<string, unknown>(run, { maxBatch: 10, maxInFlight: 1, onBatch: (n) => sizes.push(n) });
    const first = b.submit('a');
    expect(calls).toHaveLength(1);
    const rest = ['b', 'c', 'd'].map((x) => b.submit(x));
    expect(calls).toHaveLength(1);
    expect(b.waiting).toBe(3);
    calls[0]!.finish();
    expect(await first).toBe('done:a');
    await tick();
    expect(calls).toHaveLength(2);
    expect(calls[1]!.items).toEqual(['b', 'c', 'd']);
    calls[1]!.finish();
    expect(await Promise.all(rest)).toEqual(['done:b', 'done:c', 'done:d']);
    expect(sizes).toEqual([1, 3]);
  });

  it('keeps to maxBatch and maxInFlight', async () => {
    const { calls, run } = controlled<number>();
    const b = new Batcher<number, unknown>(run, { maxBatch: 3, maxInFlight: 2 });
    const all = Array.from({ length: 10 }, (_, i) => b.submit(i));
    expect(calls.map((c) => c.items)).toEqual([[0], [1]]);
    calls[0]!.finish();
    await tick();
    expect(calls.map((c) => c.items)).toEqual([[0], [1], [2, 3, 4]]);
    calls[1]!.finish();
    await tick();
    expect(calls[3]!.items).toEqual([5, 6, 7]);
    calls[2]!.finish();
    await tick();
    expect(calls[4]!.items).toEqual([8, 9]);
    calls[3]!.finish();
    calls[4]!.finish();
    expect(await Promise.all(all)).toEqual(Array.from({ length: 10 }, (_, i) => `done:${i}`));
  });

  it('never puts two items with one key in a batch, and keeps arrival order otherwise', async () => {
    const { calls, run } = controlled<string>();
    const b = new Batcher<string, unknown>(run, { maxBatch: 10, maxInFlight: 1, keyOf: (s) => s[0]! });
    const all = ['x0', 'a1', 'a2', 'b1', 'a3', 'c1', 'b2'].map((x) => b.submit(x));
    calls[0]!.finish();
    await tick();
    expect(calls[1]!.items).toEqual(['a1', 'b1', 'c1']);
    calls[1]!.finish();
    await tick();
    expect(calls[2]!.items).toEqual(['a2', 'b2']);
    calls[2]!.finish();
    await tick();
    expect(calls[3]!.items).toEqual(['a3']);
    calls[3]!.finish();
    await Promise.all(all);
  });

  it('after a failed batch tries each item alone, so only the bad one fails', async () => {
    const seen: string[][] = [];
    const b = new Batcher<string, string>(
      async (items) => {
        seen.push(items);
        await tick();
        if (items.includes('bad')) throw new Error('bad row');
        return items.map((i) => i.toUpperCase());
      },
      { maxBatch: 10, maxInFlight: 1 },
    );
    const results = await Promise.allSettled(['first', 'x', 'bad', 'y'].map((i) => b.submit(i)));
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual([
      'FIRST',
      'X',
      'bad row',
      'Y',
    ]);
    expect(seen).toEqual([['first'], ['x', 'bad', 'y'], ['x'], ['bad'], ['y']]);
  });

  it('fails the whole batch at once when splitOn says no item is to blame', async () => {
    const seen: string[][] = [];
    const splits: number[] = [];
    const b = new Batcher<string, string>(
      async (items) => {
        seen.push(items);
        await tick();
        if (items.length > 1) throw Object.assign(new Error('database away'), { code: 'ECONNREFUSED' });
        return items;
      },
      { maxBatch: 10, maxInFlight: 1, splitOn: (err) => (err as { code?: string }).code === '23505', onSplit: (n) => splits.push(n) },
    );
    const results = await Promise.allSettled(['first', 'x', 'y'].map((i) => b.submit(i)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect(seen).toEqual([['first'], ['x', 'y']]);
    expect(splits).toEqual([]);
  });

  it('settles every promise when run throws synchronously, and keeps going', async () => {
    let calls = 0;
    const b = new Batcher<number, number>(
      (items) => {
        calls++;
        if (calls <= 2) throw new Error('sync');
        return Promise.resolve(items);
      },
      { maxBatch: 10, maxInFlight: 1 },
    );
    const first = await Promise.allSettled([1, 2, 3].map((i) => b.submit(i)));
    expect(first.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    expect(await b.submit(4)).toBe(4);
  });

  it('with maxWaitMs, fails the items that waited longer for a batch instead of sending them late', async () => {
    const { calls, run } = controlled<string>();
    const b = new Batcher<string, unknown>(run, { maxBatch: 10, maxInFlight: 1, maxWaitMs: 40 });
    const first = b.submit('a');
    const stale = b.submit('b');
    await new Promise((r) => setTimeout(r, 60));
    const fresh = b.submit('c');
    expect(b.waiting).toBe(2);
    calls[0]!.finish();
    expect(await first).toBe('done:a');
    await expect(stale).rejects.toThrow('waited over 40 ms for a batch');
    await tick();
    expect(calls.map((c) => c.items)).toEqual([['a'], ['c']]);
    calls[1]!.finish();
    expect(await fresh).toBe('done:c');
    expect(b.waiting).toBe(0);
  });

  it('with maxWaitMs, frees its slot when every waiting item has expired', async () => {
    const { calls, run } = controlled<string>();
    const b = new Batcher<string, unknown>(run, { maxBatch: 10, maxInFlight: 1, maxWaitMs: 20 });
    const first = b.submit('a');
    const stale = b.submit('b');
    await new Promise((r) => setTimeout(r, 40));
    calls[0]!.finish();
    await first;
    await expect(stale).rejects.toThrow('waited over 20 ms');
    expect(calls).toHaveLength(1);
    // The slot is free: a new item leaves at once.
    const next = b.submit('d');
    expect(calls).toHaveLength(2);
    calls[1]!.finish();
    expect(await next).toBe('done:d');
  });

  it('fails a batch whose run answers the wrong number of results', async () => {
    const b = new Batcher<number, number>(async () => [], { maxBatch: 10, maxInFlight: 1 });
    await expect(b.submit(1)).rejects.toThrow('batch of 1 answered 0 results');
  });
});
