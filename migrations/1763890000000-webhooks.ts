import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Merchant webhooks: the exact bytes of each event body (so every attempt and every manual
 * redelivery sends the same body the signature covers), a per-delivery attempt budget (a
 * manual redelivery of a finished delivery is one more attempt), and each attempt's outcome.
 */
export class Webhooks1763890000000 implements MigrationInterface {
  name = 'Webhooks1763890000000';

  async up(q: QueryRunner): Promise<void> {
    // The JSON text sent, as written at dispatch (payload keeps the same event as jsonb for queries).
    await q.query(`ALTER TABLE webhook_deliveries ADD COLUMN body text`);
    // Attempts allowed before the delivery is `failed`; NULL means the service's default.
    await q.query(`ALTER TABLE webhook_deliveries ADD COLUMN max_attempts integer CHECK (max_attempts > 0)`);
    await q.query(`ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_attempts_nonneg CHECK (attempts >= 0)`);
    await q.query(
      `ALTER TABLE webhook_delivery_attempts ADD COLUMN outcome text CHECK (outcome IN ('delivered', 'retrying', 'failed'))`,
    );
    await q.query(`CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX webhook_deliveries_event_idx`);
    await q.query(`ALTER TABLE webhook_delivery_attempts DROP COLUMN outcome`);
    await q.query(`ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_attempts_nonneg`);
    await q.query(`ALTER TABLE webhook_deliveries DROP COLUMN max_attempts`);
    await q.query(`ALTER TABLE webhook_deliveries DROP COLUMN body`);
  }
}
