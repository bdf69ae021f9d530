import 'reflect-metadata';
import { INestApplication } from '@nestjs/common';
import { createApp } from './app.js';
import { ConfigError, loadConfig } from './config/config.js';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`invalid configuration: ${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const app = await createApp(cfg);
  if (cfg.role !== 'worker') {
    await (app as INestApplication).listen(cfg.port, '0.0.0.0');
  } else {
    await app.init();
  }
}

await main();
