import { Inject, Injectable } from '@nestjs/common';
import { AppConfig } from '../../config/config.js';
import { Database } from '../../database/database.js';
import { SandboxRow, SandboxStoreBase } from '../sandbox-store.js';

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
 * Idempotent DDL of the Lean emulator, run in order under the same advisory lock as
 * SandboxStore's (SandboxStoreBase): concurrent `CREATE SCHEMA/TABLE IF NOT EXISTS` from
 * several starting processes, or from both stores, can still collide in the catalog.
 */
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
  // Faults injected, per provider and kind: the same table as SandboxStore's (whichever store starts first creates it).
  `CREATE TABLE IF NOT EXISTS sandbox.fault_injections (
     provider text NOT NULL,
     kind     text NOT NULL,
     n        bigint NOT NULL DEFAULT 0,
     PRIMARY KEY (provider, kind)
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

const CREDENTIALS: SandboxRow = { table: 'sandbox.lean_credentials', key: 'id', value: 1 };
const FAULTS: SandboxRow = { table: 'sandbox.lean_faults', key: 'id', value: 1 };

/**
 * The Lean emulator's own storage in the Postgres schema `sandbox`, created at start by
 * this module (independently of SandboxStore). Postgres, not memory, because several
 * service processes serve the emulator at once and tests restart them.
 */
@Injectable()
export class LeanSandboxStore extends SandboxStoreBase {
  constructor(
    db: Database,
    @Inject(LEAN_SANDBOX_OPTIONS) readonly options: LeanSandboxOptions,
  ) {
    super(db, LEAN_DDL);
  }

  /** The stored credentials, generated on first use. */
  credentials<T>(generate: () => Promise<T>): Promise<T> {
    return this.generatedOnce(CREDENTIALS, generate);
  }

  faults(): Promise<Record<string, unknown>> {
    return this.settings(FAULTS);
  }

  /** Merges a validated partial update into the stored settings, atomically. */
  patchFaults(patch: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.mergeSettings(FAULTS, patch);
  }

  resetFaults(): Promise<void> {
    return this.deleteRow(FAULTS);
  }
}
