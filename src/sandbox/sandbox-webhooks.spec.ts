import { Logger } from '@nestjs/common';
import { describe, expect, it } from 'vitest';
import type { Database } from '../database/database.js';
import { DueWebhook, WebhookDeliveries } from './sandbox-webhooks.js';

// The lanes' bookkeeping, with a stand-in for the database (the deliveries against a real one
// are in test/sandbox-binance-pay.e2e.spec.ts).

describe('WebhookDeliveries: lanes', () => {
  it('fails the round with a lane\'s error only after every lane has finished, never leaving it unhandled', async () => {
    const batch = 2;
    let claims = 0;
    let recorded = 0;
    const db = {
      async query(sql: string): Promise<unknown[]> {
        if (sql.includes('FOR UPDATE SKIP LOCKED')) {
          claims++;
          // The first claim is a full batch, which opens a second lane; its claim fails, as
          // on a lost connection, while the first lane is still sending.
          if (claims === 1) return [1, 2].map((id) => ({ id: String(id), url: 'http://127.0.0.1:9/', attempts: 0 }));
          throw new Error('connection lost');
        }
        if (sql.includes('SET attempts = $2')) recorded++;
        return [];
      },
    } as unknown as Database;
    const deliveries = new WebhookDeliveries<DueWebhook>(db, new Logger('test'), {
      table: 'hooks',
      columns: [],
      batch,
      timeoutMs: 1_000,
      leaseMs: 30_000,
      // Each send takes a while and fails, so the first lane records two failures at the end.
      request: async () => {
        await new Promise((resolve) => setTimeout(resolve, 50));
        throw new Error('not sent');
      },
      acknowledged: () => true,
      retryDelay: () => 1_000,
      maxAttempts: 2,
    });
    await expect(deliveries.deliverDue(new AbortController().signal)).rejects.toThrow('connection lost');
    expect(claims).toBe(2);
    // The first lane had finished (both failures recorded) before the round gave up.
    expect(recorded).toBe(batch);
  });
});
