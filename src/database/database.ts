import { BeforeApplicationShutdown, Injectable, Logger } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/config.js';
import { PreparedNames } from './prepared-names.js';

/** Something that runs SQL: the pool, or one transaction. */
export interface Sql {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
}

/**
 * Errors after which a pooled connection must not be reused: anything that is not an
 * ordinary statement error from a healthy session (constraint violations, lock timeouts and
 * the like leave the session usable; a dropped socket or a terminated backend does not).
 */
function breaksConnection(err: unknown): boolean {
  if (!(err instanceof pg.DatabaseError)) return true;
  const code = err.code ?? '';
  return code.startsWith('08') || code.startsWith('57') || isStalePlan(err);
}

/**
 * With "cached plan must not change result type": a named statement prepared on this session
 * before a migration changed a table it returns (`SELECT *` of a table that gained a column).
 */
const STALE_PLAN = '0A000';

function isStalePlan(err: unknown): boolean {
  return err instanceof pg.DatabaseError && err.code === STALE_PLAN && /cached plan must not change result type/.test(err.message);
}

/**
 * Thin SQL access to the pg pool TypeORM manages (TypeORM still owns the pool's lifecycle
 * and runs the migrations). The service writes explicit SQL because nearly every write is
 * a conditional state transition or a guarded insert under a row lock, which read better as
 * SQL than as entity saves; going to the pool directly skips TypeORM's per-query runner,
 * which the benchmark's profiles showed on every statement (docs/performance.md).
 *
 * Statements a process repeats are sent as named (server-side prepared) statements, so
 * Postgres parses and plans them once per connection instead of on every call (see
 * PreparedNames for which and how many). A migration that changes what a prepared
 * statement returns (`SELECT *` of a table that gained a column) makes its plan stale: the
 * statement fails with 0A000, the process starts a new generation of names (everything is
 * prepared afresh), the connection is dropped, and a statement outside a transaction is
 * simply run again, unnamed. Inside a transaction it cannot be (the transaction is
 * aborted): that transaction fails, as on a lost connection, and the API answers 503.
 */
@Injectable()
export class Database implements Sql, BeforeApplicationShutdown {
  private readonly logger = new Logger('Database');
  private readonly names: PreparedNames;
  /** Connections checked out now, with what they run (for the shutdown below). */
  private readonly active = new Map<pg.PoolClient, string>();

  /** Set on a Database made by separate(): a pool of its own instead of TypeORM's. */
  private own?: pg.Pool;

  constructor(
    @InjectDataSource() readonly dataSource: DataSource,
    private readonly cfg: AppConfig,
  ) {
    this.names = new PreparedNames(cfg.dbPreparedStatements ? 96 : 0);
  }

  /** The pg pool behind the TypeORM data source (or, from separate(), a pool of its own). */
  get pool(): pg.Pool {
    return this.own ?? (this.dataSource.driver as unknown as { master: pg.Pool }).master;
  }

  /**
   * Another Database over a small pool of its own, with the main pool's connection settings:
   * for background work that must not wait in line behind every request waiting for one of
   * the main pool's connections. Connects only when used; whoever makes one ends it (end()).
   */
  separate(max: number, label: string): Database {
    const db = new Database(this.dataSource, this.cfg);
    const options = this.pool.options;
    db.own = new pg.Pool({
      ...options,
      // pg-pool keeps the password as a non-enumerable property: copied by name.
      password: options.password,
      max,
      // Told apart from the main pool's sessions in pg_stat_activity.
      application_name: `${options.application_name ?? 'refund-orchestrator'}:${label}`,
    });
    // An idle connection that fails (a restarted Postgres) must not crash the process.
    db.own.on('error', (err) => this.logger.warn(`idle connection of a separate pool failed: ${err.message}`));
    return db;
  }

  /** Ends a separate() pool, waiting for its connections to come back (TypeORM ends the main one). */
  async end(): Promise<void> {
    if (!this.own) return;
    await this.beforeApplicationShutdown();
    await this.own.end();
  }

  private async checkout(what: string): Promise<pg.PoolClient> {
    const client = await this.pool.connect();
    this.active.set(client, what);
    return client;
  }

  /** Back to the pool, or closed when `err` is given; once, even after a forced release at shutdown. */
  private giveBack(client: pg.PoolClient, err?: unknown): void {
    if (!this.active.delete(client)) return;
    client.release(err === undefined ? undefined : (err as Error));
  }

  async query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    const name = this.names.nameFor(sql);
    const client = await this.checkout(sql);
    let broken: unknown;
    try {
      return (await client.query({ text: sql, values: params, name })).rows as T[];
    } catch (err) {
      broken = breaksConnection(err) ? err : undefined;
      if (name && isStalePlan(err)) {
        this.names.reset();
        this.giveBack(client, err);
        return this.unnamed<T>(sql, params);
      }
      throw err;
    } finally {
      this.giveBack(client, broken);
    }
  }

  private async unnamed<T>(sql: string, params: unknown[]): Promise<T[]> {
    const client = await this.checkout(sql);
    let broken: unknown;
    try {
      return (await client.query(sql, params)).rows as T[];
    } catch (err) {
      broken = breaksConnection(err) ? err : undefined;
      throw err;
    } finally {
      this.giveBack(client, broken);
    }
  }

  async one<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    const rows = await this.query<T>(sql, params);
    return rows[0];
  }

  /** READ COMMITTED transaction; row locks (FOR UPDATE) give the serialisation we need. */
  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    const client = await this.checkout('BEGIN');
    const names = this.names;
    const active = this.active;
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await fn({
        async query<R>(sql: string, params: unknown[] = []): Promise<R[]> {
          if (active.has(client)) active.set(client, sql);
          try {
            return (await client.query({ text: sql, values: params, name: names.nameFor(sql) })).rows as R[];
          } catch (err) {
            if (isStalePlan(err)) {
              names.reset();
              broken = err as Error;
            }
            throw err;
          }
        },
      });
      await client.query('COMMIT');
      return result;
    } catch (err) {
      // Whatever failed (a statement, the callback's own check, the commit), the session must
      // leave the transaction before it goes back to the pool; if even that fails, it is gone.
      await client.query('ROLLBACK').catch((rollbackErr: Error) => {
        broken = rollbackErr;
      });
      throw err;
    } finally {
      this.giveBack(client, broken);
    }
  }

  /**
   * The pool's end (TypeORM closes it at application shutdown) waits for every checked-out
   * connection. Statements still running get SHUTDOWN_GRACE_MS to finish; then their
   * connections are closed (their callers see a connection error, as on a lost database)
   * rather than holding the process's exit up.
   */
  async beforeApplicationShutdown(): Promise<void> {
    const deadline = Date.now() + SHUTDOWN_GRACE_MS;
    while (this.active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    for (const [client, what] of [...this.active]) {
      this.logger.warn(`closing a connection still busy at shutdown: ${what.replace(/\s+/g, ' ').slice(0, 160)}`);
      this.giveBack(client, new Error('shutting down'));
    }
  }
}

const SHUTDOWN_GRACE_MS = 5_000;
