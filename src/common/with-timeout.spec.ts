import { describe, expect, it, vi } from 'vitest';
import { withTimeout } from './with-timeout.js';

describe('withTimeout', () => {
  it('passes an answer that comes in time through, and leaves no timer behind', async () => {
    vi.useFakeTimers();
    try {
      await expect(withTimeout(Promise.resolve(42), 500)).resolves.toBe(42);
      await expect(withTimeout(Promise.reject(new Error('boom')), 500)).rejects.toThrow('boom');
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('rejects, naming what did not answer, once the time has passed', async () => {
    vi.useFakeTimers();
    try {
      const never = new Promise<number>(() => undefined);
      let error: Error | undefined;
      const late = withTimeout(never, 500, 'Postgres').catch((err: Error) => {
        error = err;
      });
      await vi.advanceTimersByTimeAsync(499);
      expect(error).toBeUndefined();
      await vi.advanceTimersByTimeAsync(1);
      await late;
      expect(error?.message).toBe('Postgres did not answer within 500 ms');
      // Redis is the default subject (the queue and rate-limit callers).
      const redis = withTimeout(never, 10).catch((err: Error) => err.message);
      await vi.advanceTimersByTimeAsync(10);
      expect(await redis).toBe('Redis did not answer within 10 ms');
    } finally {
      vi.useRealTimers();
    }
  });
});
