import { Injectable, OnApplicationShutdown, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { Database } from '../database/database.js';
import { MAX_LANES } from './sandbox-webhooks.js';

/**
 * The emulators' own storage: a Postgres schema `sandbox` that they create themselves at
 * start. It is deliberately not in the product migrations (the emulators are not part of
 * the product), and it lives in Postgres rather than memory because several service
 * processes serve the emulators at once and tests restart them.
 */

/**
 * Arbitrary constant: the advisory lock serialising the DDL of concurrently starting processes,
 * the Lean emulator's (lean.store.ts) included.
 */
const SANDBOX_DDL_LOCK = 7_263_202;
/**
 * Connections of a store's background pool, at most: SandboxStore's serves Binance Pay's
 * settlement (one statement at a time) and two emulators' webhook deliveries (up to
 * MAX_LANES claims or records each at once, sandbox-webhooks.ts), so none waits for another
 * under a backlog. A connection is held only for a statement, never across a delivery, and
 * idle ones close (the main pool's idle timeout): an idle emulator keeps one or two.
 */
const BACKGROUND_POOL_SIZE = 1 + 2 * MAX_LANES;
/** How often counted fault injections are written to sandbox.fault_injections. */
const COUNT_FLUSH_MS = 250;

/** Idempotent DDL, run in order under the lock. Add a provider's tables here. */
const SANDBOX_DDL: readonly string[] = [
  `CREATE SCHEMA IF NOT EXISTS sandbox`,
  // Generated credentials, one row per provider, shared by every process on this database.
  `CREATE TABLE IF NOT EXISTS sandbox.credentials (
     provider   text PRIMARY KEY,
     data       jsonb NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now()
   )`,
  // Fault settings, one row per provider; absent keys take the defaults.
  `CREATE TABLE IF NOT EXISTS sandbox.faults (
     provider   text PRIMARY KEY,
     settings   jsonb NOT NULL DEFAULT '{}'::jsonb,
     updated_at timestamptz NOT NULL DEFAULT now()
   )`,

  // Faults injected, counted per provider and kind (GET /sandbox/<provider>/faults/injected).
  `CREATE TABLE IF NOT EXISTS sandbox.fault_injections (
     provider text NOT NULL,
     kind     text NOT NULL,
     n        bigint NOT NULL DEFAULT 0,
     PRIMARY KEY (provider, kind)
   )`,
  // --- Binance Pay -----------------------------------------------------------------------
  `CREATE TABLE IF NOT EXISTS sandbox.binance_orders (
     prepay_id          text PRIMARY KEY,
     merchant_trade_no  text NOT NULL UNIQUE,
     transaction_id     text NOT NULL,
     currency           text NOT NULL,
     order_amount       numeric(38,8) NOT NULL CHECK (order_amount > 0),
     status             text NOT NULL,
     open_user_id       text NOT NULL,
     pass_through_info  text NOT NULL DEFAULT '',
     refunded_amount    numeric(38,8) NOT NULL DEFAULT 0,
     pending_amount     numeric(38,8) NOT NULL DEFAULT 0,
     remaining_attempts integer NOT NULL DEFAULT 10,
     transact_time      timestamptz,
     created_at         timestamptz NOT NULL DEFAULT now(),
     -- The invariant the emulator exists to enforce: never refund more than was paid.
     CHECK (refunded_amount + pending_amount <= order_amount),
     CHECK (remaining_attempts >= 0)
   )`,
  `CREATE INDEX IF NOT EXISTS binance_orders_created_idx ON sandbox.binance_orders (created_at DESC)`,
  `CREATE TABLE IF NOT EXISTS sandbox.binance_refunds (
     refund_id              bigint PRIMARY KEY,
     refund_request_id      text NOT NULL UNIQUE,
     prepay_id              text NOT NULL REFERENCES sandbox.binance_orders (prepay_id),
     requested_amount       numeric(38,8) NOT NULL,
     refund_amount          numeric(38,8) NOT NULL CHECK (refund_amount > 0),
     -- The create response as first answered, replayed for duplicate requests.
     refunded_amount_after  numeric(38,8) NOT NULL,
     remaining_attempts_after integer NOT NULL,
     status                 text NOT NULL,
     will_fail              boolean NOT NULL,
     settle_at              timestamptz NOT NULL,
     settled_at             timestamptz,
     refund_reason          text,
     webhook_url            text,
     created_at             timestamptz NOT NULL DEFAULT now()
   )`,
  `CREATE INDEX IF NOT EXISTS binance_refunds_prepay_idx ON sandbox.binance_refunds (prepay_id, created_at)`,
  `CREATE INDEX IF NOT EXISTS binance_refunds_due_idx ON sandbox.binance_refunds (settle_at)
     WHERE status = 'REFUND_PENDING'`,
  `CREATE TABLE IF NOT EXISTS sandbox.binance_webhooks (
     id                bigserial PRIMARY KEY,
     refund_id         bigint NOT NULL,
     refund_request_id text NOT NULL,
     prepay_id         text NOT NULL,
     url               text NOT NULL,
     biz_status        text NOT NULL,
     body              text NOT NULL,
     -- PENDING, DELIVERED, FAILED (retries exhausted) or DROPPED (fault: never sent).
     status            text NOT NULL,
     attempts          integer NOT NULL DEFAULT 0,
     next_attempt_at   timestamptz NOT NULL DEFAULT now(),
     last_error        text,
     delivered_at      timestamptz,
     created_at        timestamptz NOT NULL DEFAULT now()
   )`,
  `CREATE INDEX IF NOT EXISTS binance_webhooks_due_idx ON sandbox.binance_webhooks (next_attempt_at)
     WHERE status = 'PENDING'`,
  `CREATE INDEX IF NOT EXISTS binance_webhooks_prepay_idx ON sandbox.binance_webhooks (prepay_id)`,

  // --- Cobo Payments (WaaS 2.0) --------------------------------------------------------------
  // Amounts are unconstrained numeric so they keep the scale they were sent with ("12.50").
  `CREATE SEQUENCE IF NOT EXISTS sandbox.cobo_order_seq START WITH 1001`,
  `CREATE SEQUENCE IF NOT EXISTS sandbox.cobo_refund_seq START WITH 1001`,
  `CREATE TABLE IF NOT EXISTS sandbox.cobo_merchants (
     merchant_id text PRIMARY KEY,
     created_at  timestamptz NOT NULL DEFAULT now()
   )`,
  `INSERT INTO sandbox.cobo_merchants (merchant_id) VALUES ('M1001') ON CONFLICT DO NOTHING`,
  `CREATE TABLE IF NOT EXISTS sandbox.cobo_orders (
     order_id              text PRIMARY KEY,
     merchant_id           text NOT NULL REFERENCES sandbox.cobo_merchants (merchant_id),
     token_id              text NOT NULL,
     payable_amount        numeric NOT NULL CHECK (payable_amount > 0),
     received_token_amount numeric NOT NULL CHECK (received_token_amount >= 0),
     -- Refunds not Failed, counting only the completed part of PartiallyCompleted ones.
     reserved_amount       numeric NOT NULL DEFAULT 0 CHECK (reserved_amount >= 0),
     status                text NOT NULL,
     merchant_order_code   text NOT NULL,
     psp_order_code        text NOT NULL,
     created_at            timestamptz NOT NULL,
     updated_at            timestamptz NOT NULL,
     -- The invariant the emulator exists to enforce: never refund more than was received.
     CHECK (reserved_amount <= received_token_amount)
   )`,
  `CREATE INDEX IF NOT EXISTS cobo_orders_created_idx ON sandbox.cobo_orders (created_at DESC)`,
  `CREATE TABLE IF NOT EXISTS sandbox.cobo_refunds (
     -- From cobo_refund_seq: the listing order and what cursors point at.
     seq                   bigint PRIMARY KEY,
     refund_id             text NOT NULL UNIQUE,
     request_id            text NOT NULL UNIQUE,
     order_id              text REFERENCES sandbox.cobo_orders (order_id),
     merchant_id           text,
     token_id              text NOT NULL,
     amount                numeric NOT NULL CHECK (amount > 0),
     to_address            text,
     status                text NOT NULL,
     refund_type           text NOT NULL,
     charge_merchant_fee   boolean NOT NULL,
     merchant_fee_amount   numeric,
     merchant_fee_token_id text,
     commission_fee        numeric NOT NULL,
     failed_reason         text,
     initiator             text NOT NULL,
     -- Decided when processing starts: Completed, PartiallyCompleted or Failed.
     outcome               text,
     completed_amount      numeric,
     transactions          jsonb NOT NULL DEFAULT '[]'::jsonb,
     -- The next lifecycle step (NULL: none scheduled) and the end of processing.
     due_at                timestamptz,
     settle_at             timestamptz,
     created_at            timestamptz NOT NULL,
     updated_at            timestamptz NOT NULL
   )`,
  `CREATE INDEX IF NOT EXISTS cobo_refunds_order_idx ON sandbox.cobo_refunds (order_id, seq)`,
  `CREATE INDEX IF NOT EXISTS cobo_refunds_merchant_idx ON sandbox.cobo_refunds (merchant_id, seq)`,
  `CREATE INDEX IF NOT EXISTS cobo_refunds_due_idx ON sandbox.cobo_refunds (due_at) WHERE due_at IS NOT NULL`,
  `CREATE TABLE IF NOT EXISTS sandbox.cobo_webhooks (
     id              bigserial PRIMARY KEY,
     event_id        text NOT NULL,
     refund_id       text NOT NULL,
     order_id        text,
     url             text NOT NULL,
     refund_status   text NOT NULL,
     -- The Refund snapshot (JSON text) at the status change; the envelope is built per attempt.
     data            text NOT NULL,
     created_ms      bigint NOT NULL,
     -- PENDING, DELIVERED, FAILED (retries exhausted) or DROPPED (fault: never sent).
     status          text NOT NULL,
     attempts        integer NOT NULL DEFAULT 0,
     next_attempt_at timestamptz NOT NULL DEFAULT now(),
     last_error      text,
     delivered_at    timestamptz,
     created_at      timestamptz NOT NULL DEFAULT now()
   )`,
  `CREATE INDEX IF NOT EXISTS cobo_webhooks_due_idx ON sandbox.cobo_webhooks (next_attempt_at)
     WHERE status = 'PENDING'`,
  `CREATE INDEX IF NOT EXISTS cobo_webhooks_refund_idx ON sandbox.cobo_webhooks (refund_id)`,
  `CREATE INDEX IF NOT EXISTS cobo_webhooks_order_idx ON sandbox.cobo_webhooks (order_id)`,
];

/** `load` once, sharing its promise; a failure is forgotten, so the next call tries again. */
export function onceUntilFailure<T>(load: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () =>
    (pending ??= load().catch((err: unknown) => {
      pending = undefined;
      throw err;
    }));
}

/** A Postgres unique_violation (23505), as the driver or TypeORM reports it. */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; driverError?: { code?: string } };
  return e?.code === '23505' || e?.driverError?.code === '23505';
}

/** A row of JSON in a sandbox table, found by its key column: credentials or fault settings. */
export interface SandboxRow {
  table: string;
  key: string;
  value: string | number;
}

/**
 * What the emulators' stores share: their DDL, run once per process under the advisory lock
 * (idempotent across processes), and JSON rows of generated credentials and of fault settings.
 */
export abstract class SandboxStoreBase implements OnModuleInit, OnModuleDestroy, OnApplicationShutdown {
  private readonly createTables: () => Promise<void>;
  /**
   * The connections of the emulators' background loops (settling, webhook deliveries), apart
   * from the process's pool. In that pool they waited in line behind every request the
   * emulator was serving: under the benchmark's load a round of the Binance Pay settlement
   * took over a second, refunds meant to settle at once settled seconds later (mostly when
   * queried), and their webhooks came after the caller had polled (docs/performance.md,
   * finding 52). A real provider settles and notifies regardless of its API traffic.
   */
  readonly background: Database;

  protected constructor(
    readonly db: Database,
    ddl: readonly string[],
  ) {
    this.background = db.separate(BACKGROUND_POOL_SIZE, 'sandbox-loops');
    this.createTables = onceUntilFailure(async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.db.transaction(async (tx) => {
            // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog; the lock prevents it.
            await tx.query('SELECT pg_advisory_xact_lock($1)', [SANDBOX_DDL_LOCK]);
            for (const statement of ddl) {
              // CREATE INDEX IF NOT EXISTS locks its table before it sees the index exists,
              // which deadlocks with another process's emulator loop; skip indexes that exist.
              const index = /^CREATE INDEX IF NOT EXISTS (\w+) ON (\w+)\./.exec(statement);
              if (index) {
                const [row] = await tx.query<{ found: string | null }>('SELECT to_regclass($1) AS found', [`${index[2]}.${index[1]}`]);
                if (row?.found) continue;
              }
              await tx.query(statement);
            }
          });
          return;
        } catch (err) {
          // `IF NOT EXISTS` DDL still takes table locks, which can deadlock with another
          // process's emulator loop already using those tables: Postgres aborts one; try again.
          if ((err as { code?: string }).code !== '40P01' || attempt >= 5) throw err;
        }
      }
    });
  }

  /** Creates the tables once per process (idempotent across processes). */
  ready(): Promise<void> {
    return this.createTables();
  }

  async onModuleInit(): Promise<void> {
    await this.ready();
  }

  /**
   * The row's `data`, generated on first use. Concurrent first uses may each generate a
   * set, but only the first insert wins and everyone reads that one back.
   */
  protected async generatedOnce<T>(row: SandboxRow, generate: () => Promise<T>): Promise<T> {
    await this.ready();
    const select = `SELECT data FROM ${row.table} WHERE ${row.key} = $1`;
    const existing = await this.db.one<{ data: T }>(select, [row.value]);
    if (existing) return existing.data;
    const fresh = await generate();
    await this.db.query(
      `INSERT INTO ${row.table} (${row.key}, data) VALUES ($1, $2::jsonb) ON CONFLICT (${row.key}) DO NOTHING`,
      [row.value, JSON.stringify(fresh)],
    );
    return (await this.db.one<{ data: T }>(select, [row.value]))!.data;
  }

  /** The row's fault settings (only the keys that were set); `db`: the background pool, for a loop. */
  protected async settings(row: SandboxRow, db: Database = this.db): Promise<Record<string, unknown>> {
    const found = await db.one<{ settings: Record<string, unknown> }>(
      `SELECT settings FROM ${row.table} WHERE ${row.key} = $1`,
      [row.value],
    );
    return found?.settings ?? {};
  }

  /** Merges a validated partial update into the row's settings, atomically. */
  protected async mergeSettings(row: SandboxRow, patch: Record<string, unknown>): Promise<Record<string, unknown>> {
    const rows = await this.db.query<{ settings: Record<string, unknown> }>(
      `INSERT INTO ${row.table} (${row.key}, settings) VALUES ($1, $2::jsonb)
       ON CONFLICT (${row.key}) DO UPDATE SET settings = ${row.table}.settings || EXCLUDED.settings, updated_at = now()
       RETURNING settings`,
      [row.value, JSON.stringify(patch)],
    );
    return rows[0]!.settings;
  }

  protected async deleteRow(row: SandboxRow): Promise<void> {
    await this.db.query(`DELETE FROM ${row.table} WHERE ${row.key} = $1`, [row.value]);
  }

  /** Injected-fault counts not written yet, by provider and kind. */
  private readonly pendingCounts = new Map<string, { provider: string; kind: string; n: number }>();
  private countTimer?: NodeJS.Timeout;

  /**
   * Counts one injected fault. Best effort and never awaited by callers: counts are summed
   * in memory and written every COUNT_FLUSH_MS (one upsert per kind, not one per call, so
   * counting stays off the hot path); a count that cannot be written is lost, never an
   * error in the emulated call.
   */
  countInjection(provider: string, kind: string, n = 1): void {
    if (n <= 0) return;
    const key = `${provider}\u0000${kind}`;
    const entry = this.pendingCounts.get(key);
    if (entry) entry.n += n;
    else this.pendingCounts.set(key, { provider, kind, n });
    this.countTimer ??= setTimeout(() => void this.flushCounts(), COUNT_FLUSH_MS).unref();
  }

  private async flushCounts(): Promise<void> {
    this.countTimer = undefined;
    const batch = [...this.pendingCounts.values()];
    this.pendingCounts.clear();
    for (const { provider, kind, n } of batch) {
      try {
        await this.db.query(
          `INSERT INTO sandbox.fault_injections (provider, kind, n) VALUES ($1, $2, $3)
           ON CONFLICT (provider, kind) DO UPDATE SET n = sandbox.fault_injections.n + EXCLUDED.n`,
          [provider, kind, n],
        );
      } catch {
        // Database down or closing: the count is lost, nothing else.
      }
    }
  }

  async onModuleDestroy(): Promise<void> {
    clearTimeout(this.countTimer);
    await this.flushCounts();
  }

  /** After every loop stopped (they wait for their round in flight in onModuleDestroy). */
  async onApplicationShutdown(): Promise<void> {
    await this.background.end();
  }

  /** `{ kind: n }` of the provider's injected faults (this process's latest counts included; others' within COUNT_FLUSH_MS). */
  async injections(provider: string): Promise<Record<string, number>> {
    await this.ready();
    clearTimeout(this.countTimer);
    await this.flushCounts();
    const rows = await this.db.query<{ kind: string; n: string }>(
      `SELECT kind, n::text FROM sandbox.fault_injections WHERE provider = $1 ORDER BY kind`,
      [provider],
    );
    return Object.fromEntries(rows.map((r) => [r.kind, Number(r.n)]));
  }

  async resetInjections(provider: string): Promise<void> {
    await this.ready();
    for (const [key, entry] of this.pendingCounts) if (entry.provider === provider) this.pendingCounts.delete(key);
    await this.db.query(`DELETE FROM sandbox.fault_injections WHERE provider = $1`, [provider]);
  }
}

const credentialsOf = (provider: string): SandboxRow => ({ table: 'sandbox.credentials', key: 'provider', value: provider });
const faultsOf = (provider: string): SandboxRow => ({ table: 'sandbox.faults', key: 'provider', value: provider });

/** The `sandbox` schema of the Binance Pay and Cobo emulators, keyed by provider. */
@Injectable()
export class SandboxStore extends SandboxStoreBase {
  constructor(db: Database) {
    super(db, SANDBOX_DDL);
  }

  /** The provider's credentials, generated on first use. */
  credentials<T>(provider: string, generate: () => Promise<T>): Promise<T> {
    return this.generatedOnce(credentialsOf(provider), generate);
  }

  /** The stored fault settings of a provider (only the keys that were set); `db` as in settings(). */
  faults(provider: string, db?: Database): Promise<Record<string, unknown>> {
    return this.settings(faultsOf(provider), db);
  }

  /** Merges a validated partial update into the stored settings, atomically. */
  patchFaults(provider: string, patch: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.mergeSettings(faultsOf(provider), patch);
  }

  resetFaults(provider: string): Promise<void> {
    return this.deleteRow(faultsOf(provider));
  }
}
