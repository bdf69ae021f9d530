import pg from 'pg';
import { DataSource, DataSourceOptions } from 'typeorm';
import { AppConfig } from '../config/config.js';
import { MIGRATIONS } from './migrations.js';

/**
 * A pg client that always has an 'error' listener: pg emits 'error' when the server ends a
 * session outside a query (57P01 on a fast shutdown), and with no listener at that moment
 * the process died. Owners still see the error through their own listeners.
 */
class ListenedClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    this.on('error', () => undefined);
  }
}

export function dataSourceOptions(cfg: Pick<AppConfig, 'databaseUrl' | 'dbPoolSize'>): DataSourceOptions {
  return {
    type: 'postgres',
    url: cfg.databaseUrl,
    entities: [],
    migrations: MIGRATIONS,
    migrationsTableName: 'migrations',
    // Every migration in its own transaction, so a failed one leaves the previous ones applied.
    migrationsTransactionMode: 'each',
    synchronize: false,
    migrationsRun: false,
    logging: false,
    extra: {
      max: cfg.dbPoolSize,
      // Fail fast when Postgres is down, so the API can answer 503 instead of hanging.
      connectionTimeoutMillis: 5_000,
      idleTimeoutMillis: 30_000,
      application_name: 'refund-orchestrator',
      Client: ListenedClient,
    },
  };
}

/** Arbitrary constant: the advisory lock that serialises migrations across processes. */
const MIGRATION_LOCK = 7_263_101;

/**
 * Runs pending migrations while holding a Postgres advisory lock, so several processes
 * starting at once (api + workers) do not race to create the same tables.
 */
export async function runMigrations(ds: DataSource): Promise<string[]> {
  const runner = ds.createQueryRunner();
  await runner.connect();
  try {
    await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const applied = await ds.runMigrations({ transaction: 'each' });
    return applied.map((m) => m.name);
  } finally {
    await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await runner.release();
  }
}
