// `npm run migration:run`: apply pending migrations and exit.
import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { loadConfig } from '../config/config.js';
import { dataSourceOptions, runMigrations } from './data-source.js';

const cfg = loadConfig();
const ds = new DataSource(dataSourceOptions(cfg));
await ds.initialize();
try {
  const applied = await runMigrations(ds);
  process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'no pending migrations\n');
} finally {
  await ds.destroy();
}
