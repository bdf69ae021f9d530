import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Reconciliation runs (contract §7): one row per run (the truth about its status and
 * progress; the BullMQ job only wakes a worker), the mismatches it found, and a scratch
 * table of what the running attempt has already paired.
 */
export class Reconciliations1763910000000 implements MigrationInterface {
  name = 'Reconciliations1763910000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE reconciliation_runs (
        id               uuid PRIMARY KEY,
        provider         text NOT NULL CHECK (provider IN ('binance_pay', 'cobo', 'lean')),
        -- The window [from_at, to_at) of our refunds' and the provider's creation times.
        from_at          timestamptz NOT NULL,
        to_at            timestamptz NOT NULL,
        status           text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
        -- Created by the daily schedule (RECONCILIATION_DAILY_AT) rather than by a person.
        scheduled        boolean NOT NULL DEFAULT false,
        requested_by     text NOT NULL,
        -- Refunds compared (pairs, and records found on one side only) and pairs that agreed.
        checked          integer NOT NULL DEFAULT 0 CHECK (checked >= 0),
        matched          integer NOT NULL DEFAULT 0 CHECK (matched >= 0),
        mismatch_count   integer NOT NULL DEFAULT 0 CHECK (mismatch_count >= 0),
        -- Provider records read (list entries and lookups).
        provider_records integer NOT NULL DEFAULT 0 CHECK (provider_records >= 0),
        -- Executions started; a crashed or interrupted one restarts the run from the beginning.
        attempts         integer NOT NULL DEFAULT 0,
        lease_owner      text,
        lease_until      timestamptz,
        error            text,
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now(),
        started_at       timestamptz,
        completed_at     timestamptz,
        CONSTRAINT reconciliation_runs_window CHECK (to_at > from_at AND to_at - from_at <= interval '31 days'),
        CONSTRAINT reconciliation_runs_matched_le_checked CHECK (matched <= checked),
        CONSTRAINT reconciliation_runs_completed_iff_done CHECK (
          (completed_at IS NOT NULL) = (status IN ('completed', 'failed')))
      )`);
    // One scheduled run per provider and day, however many workers race to create it.
    await q.query(`
      CREATE UNIQUE INDEX reconciliation_runs_scheduled_unique ON reconciliation_runs (provider, from_at, to_at)
        WHERE scheduled`);
    await q.query(`CREATE INDEX reconciliation_runs_created_idx ON reconciliation_runs (created_at DESC, id DESC)`);
    await q.query(`CREATE INDEX reconciliation_runs_provider_created_idx ON reconciliation_runs (provider, created_at DESC, id DESC)`);
    // The sweeper looks only at runs not finished.
    await q.query(`
      CREATE INDEX reconciliation_runs_active_idx ON reconciliation_runs (updated_at)
        WHERE status IN ('queued', 'running')`);

    // refund_id has no foreign key on purpose: a mismatch may be about a row we lost, and it
    // must survive whatever later happens to the refund.
    await q.query(`
      CREATE TABLE reconciliation_mismatches (
        id                  bigserial PRIMARY KEY,
        run_id              uuid NOT NULL REFERENCES reconciliation_runs(id) ON DELETE CASCADE,
        kind                text NOT NULL CHECK (kind IN ('missing_at_provider', 'missing_locally',
                              'status_mismatch', 'amount_mismatch')),
        refund_id           uuid,
        provider_refund_id  text,
        provider_request_id text,
        ours                jsonb,
        theirs              jsonb,
        detail              text,
        created_at          timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT reconciliation_mismatches_sides CHECK (
          (kind = 'missing_at_provider' AND ours IS NOT NULL AND theirs IS NULL)
          OR (kind = 'missing_locally' AND ours IS NULL AND theirs IS NOT NULL)
          OR (kind IN ('status_mismatch', 'amount_mismatch') AND ours IS NOT NULL AND theirs IS NOT NULL))
      )`);
    await q.query(`CREATE INDEX reconciliation_mismatches_run_idx ON reconciliation_mismatches (run_id, id)`);
    await q.query(`CREATE INDEX reconciliation_mismatches_refund_idx ON reconciliation_mismatches (refund_id) WHERE refund_id IS NOT NULL`);

    // Scratch of the running attempt: provider records already read ('p:<id>') and refunds
    // of ours already paired ('r:<id>', 'q:<old request id>'). Emptied when the run ends or
    // restarts; unlogged because it is rebuilt by a restart anyway.
    await q.query(`
      CREATE UNLOGGED TABLE reconciliation_seen (
        run_id uuid NOT NULL,
        key    text NOT NULL,
        PRIMARY KEY (run_id, key)
      )`);

    // Pairing provider records with our rows: by provider refund id, by the request ids of
    // earlier submissions (ops retries), and our refunds of one provider in a window.
    await q.query(`
      CREATE INDEX refunds_provider_refund_id_idx ON refunds (provider, provider_refund_id)
        WHERE provider_refund_id IS NOT NULL`);
    await q.query(`CREATE INDEX refund_attempts_request_id_idx ON refund_attempts (provider_request_id)`);
    await q.query(`CREATE INDEX refunds_provider_created_idx ON refunds (provider, created_at, id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX refunds_provider_created_idx`);
    await q.query(`DROP INDEX refund_attempts_request_id_idx`);
    await q.query(`DROP INDEX refunds_provider_refund_id_idx`);
    await q.query(`DROP TABLE reconciliation_seen`);
    await q.query(`DROP TABLE reconciliation_mismatches`);
    await q.query(`DROP TABLE reconciliation_runs`);
  }
}
