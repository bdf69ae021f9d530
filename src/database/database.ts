import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { DataSource, EntityManager, QueryRunner } from 'typeorm';

/** Something that runs SQL: the pool, or one transaction. */
export interface Sql {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
}

function runnerSql(runner: QueryRunner): Sql {
  return {
    async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      // Structured results: TypeORM otherwise returns [rows, count] for UPDATE ... RETURNING.
      const result = await runner.query(sql, params, true);
      return (result.records ?? []) as T[];
    },
  };
}

/**
 * Thin SQL access over TypeORM's pool. The service writes explicit SQL because nearly
 * every write is a conditional state transition or a guarded insert under a row lock,
 * which read better as SQL than as entity saves.
 */
@Injectable()
export class Database implements Sql {
  constructor(@InjectDataSource() readonly dataSource: DataSource) {}

  async query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    const runner = this.dataSource.createQueryRunner();
    try {
      return await runnerSql(runner).query<T>(sql, params);
    } finally {
      await runner.release();
    }
  }

  async one<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    const rows = await this.query<T>(sql, params);
    return rows[0];
  }

  /** READ COMMITTED transaction; row locks (FOR UPDATE) give the serialisation we need. */
  transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    return this.dataSource.transaction((em: EntityManager) => fn(runnerSql(em.queryRunner!)));
  }
}
