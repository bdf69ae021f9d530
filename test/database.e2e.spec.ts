import { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppConfig } from '../src/config/config.js';
import { dataSourceOptions } from '../src/database/data-source.js';
import { Database } from '../src/database/database.js';
import { createTestDatabase, dropTestDatabase } from './support/database.js';

// The SQL layer against a real Postgres: named (prepared) statements, what happens to them
// when a migration changes a table under a running process, and the pool's health after
// statement errors and failed transactions.

let url: string;
let ds: DataSource;
let db: Database;

beforeAll(async () => {
  url = await createTestDatabase('sql_layer');
  ds = new DataSource(dataSourceOptions({ databaseUrl: url, dbPoolSize: 3 }));
  await ds.initialize();
  db = new Database(ds, { dbPreparedStatements: true } as AppConfig);
  await db.query(`CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)`);
  await db.query(`INSERT INTO t VALUES (1, 'one'), (2, 'two')`);
});

afterAll(async () => {
  await ds?.destroy();
  if (url) await dropTestDatabase(url);
});

async function preparedCount(): Promise<number> {
  // Each connection sees only its own prepared statements; ask on every pooled one at once.
  const clients = await Promise.all([1, 2, 3].map(() => db.pool.connect()));
  try {
    const counts = await Promise.all(clients.map((c) => c.query(`SELECT count(*)::int AS n FROM pg_prepared_statements`)));
    return counts.reduce((sum, r) => sum + r.rows[0].n, 0);
  } finally {
    clients.forEach((c) => c.release());
  }
}

describe('Database', () => {
  it('sends a statement it repeats as a named prepared statement', async () => {
    for (let i = 0; i < 6; i++) expect(await db.query(`SELECT v FROM t WHERE id = $1`, [1])).toEqual([{ v: 'one' }]);
    expect(await preparedCount()).toBeGreaterThan(0);
  });

  it('survives a migration that changes what a prepared statement returns (runs it again unnamed)', async () => {
    const sql = `SELECT * FROM t WHERE id = $1`;
    for (let i = 0; i < 6; i++) await db.query(sql, [2]);
    await db.query(`ALTER TABLE t ADD COLUMN w text NOT NULL DEFAULT 'new'`);
    // Every pooled connection that prepared it now has a stale plan ("cached plan must not
    // change result type"); each call still answers, with the new column.
    for (let i = 0; i < 6; i++) expect(await db.query(sql, [2])).toEqual([{ id: 2, v: 'two', w: 'new' }]);
  });

  it('inside a transaction, fails once on a stale plan and prepares afresh for the next', async () => {
    await db.query(`CREATE TABLE u (id int PRIMARY KEY)`);
    await db.query(`INSERT INTO u VALUES (1)`);
    const read = () => db.transaction((tx) => tx.query(`SELECT * FROM u WHERE id = $1 FOR UPDATE`, [1]));
    for (let i = 0; i < 6; i++) expect(await read()).toEqual([{ id: 1 }]);
    await db.query(`ALTER TABLE u ADD COLUMN x int NOT NULL DEFAULT 7`);
    // At most one failure per connection that held the old plan before the new generation of
    // names; then every transaction prepares the statement afresh.
    let failures = 0;
    for (let i = 0; i < 6; i++) {
      try {
        expect(await read()).toEqual([{ id: 1, x: 7 }]);
      } catch (err) {
        expect(err).toMatchObject({ code: '0A000' });
        failures++;
      }
    }
    expect(failures).toBeLessThanOrEqual(1);
    for (let i = 0; i < 3; i++) expect(await read()).toEqual([{ id: 1, x: 7 }]);
  });

  it('keeps the pool usable after statement errors, and rolls a failed transaction back', async () => {
    for (let i = 0; i < 5; i++) {
      await expect(db.query(`INSERT INTO t (id, v) VALUES (1, 'dup')`)).rejects.toMatchObject({ code: '23505' });
    }
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO t (id, v) VALUES (10, 'ten')`);
        throw new Error('the caller changed its mind');
      }),
    ).rejects.toThrow('changed its mind');
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO t (id, v) VALUES (11, 'eleven')`);
        await tx.query(`INSERT INTO t (id, v) VALUES (1, 'dup')`);
      }),
    ).rejects.toMatchObject({ code: '23505' });
    expect(await db.query(`SELECT id FROM t WHERE id IN (10, 11)`)).toEqual([]);
    expect(await db.transaction(async (tx) => tx.query(`SELECT count(*)::int AS n FROM t`))).toEqual([{ n: 2 }]);
    // No session was left inside a transaction.
    const { rows } = await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`,
    );
    expect(rows[0].n).toBe(0);
  });

  it('prepares nothing with DB_PREPARED_STATEMENTS=false', async () => {
    const plain = new Database(ds, { dbPreparedStatements: false } as AppConfig);
    for (let i = 0; i < 6; i++) await plain.query(`SELECT v FROM t WHERE id = $1 AND v <> 'x'`, [1]);
    const clients = await Promise.all([1, 2, 3].map(() => plain.pool.connect()));
    try {
      const found = await Promise.all(
        clients.map((c) => c.query(`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement LIKE '%v <> ''x''%'`)),
      );
      expect(found.reduce((sum, r) => sum + r.rows[0].n, 0)).toBe(0);
    } finally {
      clients.forEach((c) => c.release());
    }
  });
});
