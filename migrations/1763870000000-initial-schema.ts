import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The first schema of the refund service. The database enforces what it can itself
 * (status values, positive amounts, one refund per idempotency key, refunded <= amount),
 * so a bug in the application cannot write a refund the contract forbids.
 */
export class InitialSchema1763870000000 implements MigrationInterface {
  name = 'InitialSchema1763870000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE merchants (
        id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
        name                text,
        approval_thresholds jsonb NOT NULL DEFAULT '{}'::jsonb,
        provider_accounts   jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at          timestamptz NOT NULL DEFAULT now(),
        updated_at          timestamptz NOT NULL DEFAULT now()
      )`);

    await q.query(`
      CREATE TABLE api_keys (
        id          uuid PRIMARY KEY,
        key_hash    bytea NOT NULL UNIQUE,
        key_prefix  text NOT NULL,
        role        text NOT NULL CHECK (role IN ('merchant', 'ops', 'finance', 'admin')),
        merchant_id text REFERENCES merchants(id),
        name        text NOT NULL,
        created_by  text,
        created_at  timestamptz NOT NULL DEFAULT now(),
        revoked_at  timestamptz,
        CONSTRAINT api_keys_merchant_iff_merchant_role CHECK ((role = 'merchant') = (merchant_id IS NOT NULL))
      )`);

    await q.query(`
      CREATE TABLE payments (
        provider      text NOT NULL CHECK (provider IN ('binance_pay', 'cobo', 'lean')),
        payment_id    text NOT NULL,
        merchant_id   text NOT NULL REFERENCES merchants(id),
        amount        numeric(38, 18) NOT NULL CHECK (amount > 0),
        currency      text NOT NULL,
        status        text NOT NULL,
        provider_data jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (provider, payment_id)
      )`);

    await q.query(`
      CREATE TABLE refunds (
        id                  uuid PRIMARY KEY,
        merchant_id         text NOT NULL REFERENCES merchants(id),
        provider            text NOT NULL,
        payment_id          text NOT NULL,
        amount              numeric(38, 18) NOT NULL CHECK (amount > 0),
        currency            text NOT NULL,
        status              text NOT NULL CHECK (status IN ('pending_approval', 'queued', 'processing',
                              'requires_action', 'succeeded', 'partially_succeeded', 'failed', 'canceled')),
        reason              text NOT NULL CHECK (reason IN ('requested_by_customer', 'duplicate', 'fraudulent',
                              'order_canceled', 'other')),
        description         text,
        metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
        refunded_amount     numeric(38, 18) NOT NULL DEFAULT 0,
        provider_request_id text,
        provider_refund_id  text,
        provider_status     text,
        provider_state      text NOT NULL DEFAULT 'not_sent'
                              CHECK (provider_state IN ('not_sent', 'unknown', 'acknowledged')),
        failure_code        text,
        failure_message     text,
        attempt_count       integer NOT NULL DEFAULT 0,
        provider_details    jsonb NOT NULL DEFAULT '{}'::jsonb,
        provider_options    jsonb NOT NULL DEFAULT '{}'::jsonb,
        idempotency_key     text NOT NULL,
        request_hash        text NOT NULL,
        created_by_key_id   uuid,
        next_check_at       timestamptz,
        check_count         integer NOT NULL DEFAULT 0,
        lease_owner         text,
        lease_until         timestamptz,
        created_at          timestamptz NOT NULL DEFAULT now(),
        updated_at          timestamptz NOT NULL DEFAULT now(),
        status_changed_at   timestamptz NOT NULL DEFAULT now(),
        completed_at        timestamptz,
        FOREIGN KEY (provider, payment_id) REFERENCES payments(provider, payment_id),
        CONSTRAINT refunds_idempotency_key_unique UNIQUE (merchant_id, idempotency_key),
        CONSTRAINT refunds_provider_request_id_unique UNIQUE (provider, provider_request_id),
        CONSTRAINT refunds_refunded_amount_range CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
        CONSTRAINT refunds_refunded_amount_by_status CHECK (
          (status = 'succeeded' AND refunded_amount = amount)
          OR (status = 'partially_succeeded' AND refunded_amount < amount)
          OR (status NOT IN ('succeeded', 'partially_succeeded') AND refunded_amount = 0)),
        -- A refund a worker still follows always has a due time, so the sweeper can find it.
        CONSTRAINT refunds_due_when_owed CHECK (
          status NOT IN ('queued', 'processing', 'requires_action') OR next_check_at IS NOT NULL),
        CONSTRAINT refunds_completed_iff_final CHECK (
          (completed_at IS NOT NULL) = (status IN ('succeeded', 'partially_succeeded', 'failed', 'canceled')))
      )`);
    // Listing newest first, per merchant and overall; id breaks ties so cursors are stable.
    await q.query(`CREATE INDEX refunds_merchant_created_idx ON refunds (merchant_id, created_at DESC, id DESC)`);
    await q.query(`CREATE INDEX refunds_created_idx ON refunds (created_at DESC, id DESC)`);
    // The over-refund guard sums a payment's refunds under the payment's row lock.
    await q.query(`CREATE INDEX refunds_payment_idx ON refunds (provider, payment_id)`);
    // The recovery sweeper scans only refunds a worker still follows.
    await q.query(`
      CREATE INDEX refunds_due_idx ON refunds (next_check_at)
        WHERE status IN ('queued', 'processing', 'requires_action')`);

    await q.query(`
      CREATE TABLE refund_attempts (
        id                  bigserial PRIMARY KEY,
        refund_id           uuid NOT NULL REFERENCES refunds(id),
        number              integer NOT NULL,
        provider_request_id text NOT NULL,
        operation           text NOT NULL,
        outcome             text NOT NULL,
        http_status         integer,
        provider_code       text,
        error_message       text,
        latency_ms          integer,
        created_at          timestamptz NOT NULL DEFAULT now(),
        completed_at        timestamptz,
        CONSTRAINT refund_attempts_number_unique UNIQUE (refund_id, number)
      )`);

    await q.query(`
      CREATE TABLE refund_events (
        id          bigserial PRIMARY KEY,
        refund_id   uuid NOT NULL REFERENCES refunds(id),
        from_status text,
        to_status   text NOT NULL,
        actor       text NOT NULL,
        detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at  timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`CREATE INDEX refund_events_refund_idx ON refund_events (refund_id, id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE refund_events`);
    await q.query(`DROP TABLE refund_attempts`);
    await q.query(`DROP TABLE refunds`);
    await q.query(`DROP TABLE payments`);
    await q.query(`DROP TABLE api_keys`);
    await q.query(`DROP TABLE merchants`);
  }
}
