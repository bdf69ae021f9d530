import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Operations: the event outbox for merchant webhooks, webhook endpoints and deliveries,
 * review flags for refunds whose provider outcome contradicts ours, and failure categories.
 */
export class Operations1763880000000 implements MigrationInterface {
  name = 'Operations1763880000000';

  async up(q: QueryRunner): Promise<void> {
    // One row per refund event still to be fanned out to merchant webhook endpoints. Written
    // in the same transaction as the event (so a rolled-back change emits nothing and a
    // committed one is never lost); deleted once its deliveries exist.
    await q.query(`
      CREATE TABLE refund_event_outbox (
        event_id   bigint PRIMARY KEY REFERENCES refund_events(id),
        created_at timestamptz NOT NULL DEFAULT now()
      )`);

    await q.query(`
      CREATE TABLE webhook_endpoints (
        id          uuid PRIMARY KEY,
        merchant_id text NOT NULL REFERENCES merchants(id),
        url         text NOT NULL CHECK (url ~ '^https?://'),
        secret      text NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        disabled_at timestamptz
      )`);
    await q.query(`CREATE INDEX webhook_endpoints_merchant_idx ON webhook_endpoints (merchant_id) WHERE disabled_at IS NULL`);

    await q.query(`
      CREATE TABLE webhook_deliveries (
        id              uuid PRIMARY KEY,
        endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints(id),
        event_id        bigint NOT NULL REFERENCES refund_events(id),
        event_type      text NOT NULL,
        payload         jsonb NOT NULL,
        status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz,
        last_http_status integer,
        last_error      text,
        created_at      timestamptz NOT NULL DEFAULT now(),
        delivered_at    timestamptz,
        CONSTRAINT webhook_deliveries_once UNIQUE (endpoint_id, event_id)
      )`);
    await q.query(`CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC)`);
    await q.query(`CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'`);

    await q.query(`
      CREATE TABLE webhook_delivery_attempts (
        id           bigserial PRIMARY KEY,
        delivery_id  uuid NOT NULL REFERENCES webhook_deliveries(id),
        number       integer NOT NULL,
        http_status  integer,
        error        text,
        latency_ms   integer,
        created_at   timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`CREATE INDEX webhook_delivery_attempts_delivery_idx ON webhook_delivery_attempts (delivery_id, number)`);

    // A provider reported a final outcome that contradicts ours: kept for a human, never applied.
    await q.query(`ALTER TABLE refunds ADD COLUMN review_reason text`);
    await q.query(`ALTER TABLE refunds ADD COLUMN review_flagged_at timestamptz`);
    await q.query(`CREATE INDEX refunds_review_idx ON refunds (review_flagged_at) WHERE review_flagged_at IS NOT NULL`);
    // retryable | final: what an ops person can do about a failure (set with failure_code).
    await q.query(`ALTER TABLE refunds ADD COLUMN failure_category text CHECK (failure_category IN ('retryable', 'final'))`);
    await q.query(`CREATE INDEX refunds_failed_idx ON refunds (provider, failure_code, status_changed_at) WHERE status = 'failed'`);

    // Audit: ops actions that are not refund status changes (key creation and revocation).
    await q.query(`
      CREATE TABLE audit_events (
        id         bigserial PRIMARY KEY,
        actor      text NOT NULL,
        action     text NOT NULL,
        subject    text NOT NULL,
        detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    // Event rows are the audit trail: nothing may change or remove them.
    await q.query(`
      CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME; END $$`);
    await q.query(`CREATE TRIGGER refund_events_immutable BEFORE UPDATE OR DELETE ON refund_events FOR EACH ROW EXECUTE FUNCTION forbid_change()`);
    await q.query(`CREATE TRIGGER audit_events_immutable BEFORE UPDATE OR DELETE ON audit_events FOR EACH ROW EXECUTE FUNCTION forbid_change()`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TRIGGER audit_events_immutable ON audit_events`);
    await q.query(`DROP TRIGGER refund_events_immutable ON refund_events`);
    await q.query(`DROP FUNCTION forbid_change()`);
    await q.query(`DROP TABLE audit_events`);
    await q.query(`DROP INDEX refunds_failed_idx`);
    await q.query(`ALTER TABLE refunds DROP COLUMN failure_category`);
    await q.query(`DROP INDEX refunds_review_idx`);
    await q.query(`ALTER TABLE refunds DROP COLUMN review_flagged_at, DROP COLUMN review_reason`);
    await q.query(`DROP TABLE webhook_delivery_attempts`);
    await q.query(`DROP TABLE webhook_deliveries`);
    await q.query(`DROP TABLE webhook_endpoints`);
    await q.query(`DROP TABLE refund_event_outbox`);
  }
}
