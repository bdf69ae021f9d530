import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A partial index of the events that put a failed refund back in line (ops retries). The
 * count of Binance Pay's used refund slots, made by every create's over-refund guard
 * (PaymentsService) and by the worker's claim of a queued refund (its last-slot check), adds
 * the retries of refunds the provider had acknowledged; without this index that count read
 * every event of every refund of the payment (three or more per refund) to find, nearly
 * always, none. With it, an empty probe (docs/performance.md, finding 51).
 *
 * Retries are rare, so the index stays small and costs other event inserts only the check
 * of its condition. On a large `refund_events`, create it beforehand with CREATE INDEX
 * CONCURRENTLY under the same name; this migration then leaves it as it is.
 */
export class RefundEventsRetryIndex1763940000000 implements MigrationInterface {
  name = 'RefundEventsRetryIndex1763940000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE INDEX IF NOT EXISTS refund_events_retry_idx ON refund_events (refund_id) WHERE from_status = 'failed' AND to_status = 'queued'`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX IF EXISTS refund_events_retry_idx`);
  }
}
