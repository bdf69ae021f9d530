import { Injectable } from '@nestjs/common';
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
  return code.startsWith('08') || code.startsWith('57') || code === STALE_PLAN;
}

/**
 * "cached plan must not change result type": a named statement prepared on this session
 * before a migration changed a table it returns (`SELECT *` of a table that gained a column).
 */
const STALE_PLAN = '0A000';

/**
 * Thin SQL access to the pg pool TypeORM manages (TypeORM still owns the pool's lifecycle
 * and runs the migrations). The service writes explicit SQL because nearly every write is
 * a conditional state transition or a guarded insert under a row lock, which read better as
 * SQL than as entity saves; going to the pool directly skips TypeORM's per-query runner,
 * which the benchmark's profiles showed on every statement (docs/performance.md).
 *
 * Statements a process repeats outside a transaction are sent as named (server-side
 * prepared) statements, so Postgres parses and plans them once per connection instead of on
 * every call (see PreparedNames for which and how many). Statements inside a transaction
 * stay unnamed: a stale prepared plan after a migration fails the statement, which outside a
 * transaction is simply run again unnamed, but inside one would abort work already done.
 */
@Injectable()
export class Database implements Sql {
  private readonly names: PreparedNames;

  constructor(
    @InjectDataSource() readonly dataSource: DataSource,
    cfg: AppConfig,
  ) {
    this.names = new PreparedNames(cfg.dbPreparedStatements ? 96 : 0);
  }

  /** The pg pool behind the TypeORM data source. */
  get pool(): pg.Pool {
    return (this.dataSource.driver as unknown as { master: pg.Pool }).master;
  }

  async query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    const name = this.names.nameFor(sql);
    const client = await this.pool.connect();
    let broken: unknown;
    try {
      return (await client.query({ text: sql, values: params, name })).rows as T[];
    } catch (err) {
      broken = breaksConnection(err) ? err : undefined;
      if (name && err instanceof pg.DatabaseError && err.code === STALE_PLAN) {
        // The connection goes (release with the error) and the statement runs once unnamed
        // on another one; other connections drop their stale copy the same way.
        client.release(err);
        broken = null;
        return this.unnamed<T>(sql, params);
      }
      throw err;
    } finally {
      if (broken !== null) client.release(broken as Error | undefined);
    }
  }

  private async unnamed<T>(sql: string, params: unknown[]): Promise<T[]> {
    const client = await this.pool.connect();
    let broken: unknown;
    try {
      return (await client.query(sql, params)).rows as T[];
    } catch (err) {
      broken = breaksConnection(err) ? err : undefined;
      throw err;
    } finally {
      client.release(broken as Error | undefined);
    }
  }

  async one<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    const rows = await this.query<T>(sql, params);
    return rows[0];
  }

  /** READ COMMITTED transaction; row locks (FOR UPDATE) give the serialisation we need. */
  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await fn({
        async query<R>(sql: string, params: unknown[] = []): Promise<R[]> {
          return (await client.query(sql, params)).rows as R[];
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
      client.release(broken);
    }
  }
}
