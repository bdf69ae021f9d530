import { Inject, Injectable, OnModuleInit } from '@nestjs/common';
import { AppConfig } from '../../config/config.js';
import { Database } from '../../database/database.js';

/** What LeanSandboxModule.register() was given, injectable inside the module. */
export interface LeanSandboxOptions {
  /** Mount the HTTP surface and run the settle/webhook loop in this process. */
  serveHttp: boolean;
  /**
   * Default of the `webhookUrl` setting (Lean: the URL configured in the dashboard), or a
   * function of the config, e.g. `(cfg) => `${cfg.publicUrl}/webhooks/lean``.
   * Absent: no webhooks until `PUT /sandbox/lean/faults {"webhookUrl": ...}`.
   */
  defaultWebhookUrl?: string | null | ((cfg: AppConfig) => string | null);
}
export const LEAN_SANDBOX_OPTIONS = Symbol('LEAN_SANDBOX_OPTIONS');

/**
 * The same advisory lock key as SandboxStore uses for the `sandbox` schema: concurrent
 * `CREATE SCHEMA/TABLE IF NOT EXISTS` from several starting processes (or from both
 * stores) can still collide in the catalog, and one shared lock serialises all of them.
 */
const SANDBOX_DDL_LOCK = 7_263_202;

/** Idempotent DDL of the Lean emulator, run in order under the lock. */
const LEAN_DDL: readonly string[] = [
  `CREATE SCHEMA IF NOT EXISTS sandbox`,
  // Generated credentials and signing keys, one row per database.
  `CREATE TABLE IF NOT EXISTS sandbox.lean_credentials (
     id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
     data       jsonb NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now()
   )`,
  // Fault settings, one row; absent keys take the defaults.
  `CREATE TABLE IF NOT EXISTS sandbox.lean_faults (
     id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
     settings   jsonb NOT NULL DEFAULT '{}'::jsonb,
     updated_at timestamptz NOT NULL DEFAULT now()
   )`,
  // Every access token issued (tests prove tokens are reused by counting them).
  `CREATE TABLE IF NOT EXISTS sandbox.lean_tokens (
     jti        uuid PRIMARY KEY,
     client_id  text NOT NULL,
     scope      text NOT NULL,
     issued_at  timestamptz NOT NULL,
     expires_at timestamptz NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS sandbox.lean_payments (
     id                     uuid PRIMARY KEY,
     customer_id            uuid NOT NULL,
     intent_id              uuid NOT NULL,
     payment_destination_id uuid NOT NULL,
     status                 text NOT NULL,
     reconciliation_status  text NOT NULL,
     currency               text NOT NULL,
     amount                 numeric(20,2) NOT NULL CHECK (amount > 0),
     -- Sum of the refunds not REJECTED or FAILED, kept under the payment's row lock.
     reserved_amount        numeric(20,2) NOT NULL DEFAULT 0,
     beneficiary            jsonb NOT NULL,
     created_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
     -- The invariant the emulator exists to enforce: never refund more than was paid.
     CHECK (reserved_amount >= 0 AND reserved_amount <= amount)
   )`,
  `CREATE INDEX IF NOT EXISTS lean_payments_created_idx ON sandbox.lean_payments (created_at DESC)`,
  `CREATE TABLE IF NOT EXISTS sandbox.lean_refunds (
     refund_id          uuid PRIMARY KEY,
     seq                bigserial NOT NULL,
     payment_id         uuid NOT NULL REFERENCES sandbox.lean_payments (id),
     amount             numeric(20,2) NOT NULL CHECK (amount > 0),
     currency           text NOT NULL,
     reason_code        text NOT NULL,
     description        text,
     external_reference text,
     status             text NOT NULL,
     -- Decided at approval: the final status (success name or FAILED) and when it is reached.
     outcome            text,
     settle_at          timestamptz,
     created_by         text NOT NULL,
     actioned_by        text,
     actioned_at        timestamptz,
     settled_at         timestamptz,
     created_at         timestamptz NOT NULL DEFAULT clock_timestamp()
   )`,
  `CREATE INDEX IF NOT EXISTS lean_refunds_list_idx ON sandbox.lean_refunds (created_at DESC, seq DESC)`,
  `CREATE INDEX IF NOT EXISTS lean_refunds_payment_idx ON sandbox.lean_refunds (payment_id, created_at DESC)`,
  `CREATE INDEX IF NOT EXISTS lean_refunds_status_idx ON sandbox.lean_refunds (status, created_at DESC)`,
  `CREATE INDEX IF NOT EXISTS lean_refunds_due_idx ON sandbox.lean_refunds (settle_at) WHERE status = 'APPROVED'`,
  `CREATE TABLE IF NOT EXISTS sandbox.lean_webhooks (
     id              bigserial PRIMARY KEY,
     event_id        uuid NOT NULL,
     refund_id       uuid NOT NULL,
     payment_id      uuid NOT NULL,
     type            text NOT NULL,
     url             text NOT NULL,
     body            text NOT NULL,
     -- PENDING, DELIVERED, FAILED (retries exhausted) or DROPPED (fault: never sent).
     status          text NOT NULL,
     attempts        integer NOT NULL DEFAULT 0,
     next_attempt_at timestamptz NOT NULL DEFAULT now(),
     last_error      text,
     delivered_at    timestamptz,
     created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
   )`,
  `CREATE INDEX IF NOT EXISTS lean_webhooks_due_idx ON sandbox.lean_webhooks (next_attempt_at) WHERE status = 'PENDING'`,
  `CREATE INDEX IF NOT EXISTS lean_webhooks_payment_idx ON sandbox.lean_webhooks (payment_id)`,
];

/**
 * The Lean emulator's own storage in the Postgres schema `sandbox`, created at start by
 * this module (independently of SandboxStore). Postgres, not memory, because several
 * service processes serve the emulator at once and tests restart them.
 */
@Injectable()
export class LeanSandboxStore implements OnModuleInit {
  private schema?: Promise<void>;

  constructor(
    readonly db: Database,
    @Inject(LEAN_SANDBOX_OPTIONS) readonly options: LeanSandboxOptions,
  ) {}

  async onModuleInit(): Promise<void> {
    await this.ready();
  }

  /** Creates the tables once per process (idempotent across processes). */
  ready(): Promise<void> {
    this.schema ??= this.db
      .transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1)', [SANDBOX_DDL_LOCK]);
        for (const statement of LEAN_DDL) await tx.query(statement);
      })
      .catch((err: unknown) => {
        this.schema = undefined; // let a later call try again
        throw err;
      });
    return this.schema;
  }

  /**
   * The stored credentials, generated on first use. Concurrent first uses may each
   * generate a set, but only the first insert wins and everyone reads that one back.
   */
  async credentials<T>(generate: () => Promise<T>): Promise<T> {
    await this.ready();
    const select = 'SELECT data FROM sandbox.lean_credentials WHERE id = 1';
    const existing = await this.db.one<{ data: T }>(select);
    if (existing) return existing.data;
    const fresh = await generate();
    await this.db.query(
      'INSERT INTO sandbox.lean_credentials (id, data) VALUES (1, $1::jsonb) ON CONFLICT (id) DO NOTHING',
      [JSON.stringify(fresh)],
    );
    return (await this.db.one<{ data: T }>(select))!.data;
  }

  async faults(): Promise<Record<string, unknown>> {
    const row = await this.db.one<{ settings: Record<string, unknown> }>('SELECT settings FROM sandbox.lean_faults WHERE id = 1');
    return row?.settings ?? {};
  }

  /** Merges a validated partial update into the stored settings, atomically. */
  async patchFaults(patch: Record<string, unknown>): Promise<Record<string, unknown>> {
    const rows = await this.db.query<{ settings: Record<string, unknown> }>(
      `INSERT INTO sandbox.lean_faults (id, settings) VALUES (1, $1::jsonb)
       ON CONFLICT (id) DO UPDATE SET settings = sandbox.lean_faults.settings || EXCLUDED.settings, updated_at = now()
       RETURNING settings`,
      [JSON.stringify(patch)],
    );
    return rows[0]!.settings;
  }

  async resetFaults(): Promise<void> {
    await this.db.query('DELETE FROM sandbox.lean_faults WHERE id = 1');
  }
}
