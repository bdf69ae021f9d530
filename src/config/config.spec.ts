import { describe, expect, it } from 'vitest';
import { queuePrefix } from '../processing/queues.js';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('has the contract defaults', () => {
    const cfg = loadConfig({});
    expect(cfg).toMatchObject({
      port: 3000,
      role: 'all',
      databaseUrl: 'postgres://postgres:postgres@127.0.0.1:5432/refunds',
      redisUrl: 'redis://127.0.0.1:6379',
      sandbox: true,
      migrationsRun: true,
      binancePayBaseUrl: 'https://bpay.binanceapi.com',
    });
    expect(cfg.cobo.baseUrl).toBe('https://api.cobo.com/v2');
    expect(cfg.lean).toMatchObject({ baseUrl: 'https://api2.leantech.me', authUrl: 'https://auth.leantech.me' });
    expect(cfg.binancePay).toBeUndefined();
  });

  it('turns the sandbox off in production and then requires ADMIN_API_KEY', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/ADMIN_API_KEY/);
    expect(loadConfig({ NODE_ENV: 'production', ADMIN_API_KEY: 'a'.repeat(32) }).sandbox).toBe(false);
  });

  it.each([
    [{ ROLE: 'both' }, /ROLE/],
    [{ PORT: 'eighty' }, /PORT/],
    [{ DATABASE_URL: 'not a url' }, /DATABASE_URL/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
    [{ REDIS_URL: 'http://x' }, /REDIS_URL/],
    [{ SANDBOX: 'maybe' }, /SANDBOX/],
    [{ SANDBOX_SERVE: 'maybe' }, /SANDBOX_SERVE/],
    [{ MIGRATIONS_RUN: 'sometimes' }, /MIGRATIONS_RUN/],
    [{ BINANCE_PAY_BASE_URL: 'ftp://x' }, /BINANCE_PAY_BASE_URL/],
    [{ BINANCE_PAY_API_KEY: 'k' }, /BINANCE_PAY_SECRET_KEY/],
    [{ COBO_API_PRIVATE_KEY: 'xyz' }, /COBO_API_PRIVATE_KEY/],
    [{ COBO_PUBLIC_KEY: '12' }, /COBO_PUBLIC_KEY/],
    [{ ADMIN_API_KEY: 'short' }, /ADMIN_API_KEY/],
    [{ LEASE_MS: '10000', PROVIDER_TIMEOUT_MS: '5000' }, /LEASE_MS/],
    [{ BINANCE_PAY_API_KEY: 'k', BINANCE_PAY_SECRET_KEY: 's' }, /ADMIN_API_KEY/],
    [{ PROVIDER_WEBHOOK_TOLERANCE_MS: '999' }, /PROVIDER_WEBHOOK_TOLERANCE_MS/],
    [{ PROVIDER_WEBHOOK_TOLERANCE_MS: 'five minutes' }, /PROVIDER_WEBHOOK_TOLERANCE_MS/],
    [{ LEAN_WEBHOOK_MAX_AGE_MS: String(8 * 86_400_000) }, /LEAN_WEBHOOK_MAX_AGE_MS/],
  ])('rejects %j naming the variable', (env, message) => {
    expect(() => loadConfig(env as NodeJS.ProcessEnv)).toThrow(ConfigError);
    expect(() => loadConfig(env as NodeJS.ProcessEnv)).toThrow(message);
  });

  it('reads REDIS_CLUSTER (off by default) and then hash-tags each queue\'s prefix', () => {
    const standalone = loadConfig({ QUEUE_PREFIX: 'rq' });
    expect(standalone.redisCluster).toBe(false);
    expect(queuePrefix(standalone, 'refunds-cobo')).toBe('rq');
    const cluster = loadConfig({ QUEUE_PREFIX: 'rq', REDIS_CLUSTER: 'true', REDIS_URL: 'redis://10.0.0.5:7000/0' });
    expect(cluster.redisCluster).toBe(true);
    expect(queuePrefix(cluster, 'refunds-cobo')).toBe('rq:{refunds-cobo}');
    expect(queuePrefix(cluster, 'merchant-webhooks')).toBe('rq:{merchant-webhooks}');
    // A cluster has database 0 only.
    expect(() => loadConfig({ REDIS_CLUSTER: 'true', REDIS_URL: 'redis://127.0.0.1:6379/3' })).toThrow(/REDIS_URL.*database/);
    expect(() => loadConfig({ REDIS_CLUSTER: 'yes please' })).toThrow(/REDIS_CLUSTER/);
  });

  it('serves the emulators in API processes unless SANDBOX_SERVE=false', () => {
    expect(loadConfig({}).sandboxServe).toBe(true);
    expect(loadConfig({ SANDBOX_SERVE: 'false' }).sandboxServe).toBe(false);
  });

  it('reads CREATE_BATCH_SIZE, 64 by default, 1 to turn batching off', () => {
    expect(loadConfig({}).createBatchSize).toBe(64);
    expect(loadConfig({ CREATE_BATCH_SIZE: '1' }).createBatchSize).toBe(1);
    expect(() => loadConfig({ CREATE_BATCH_SIZE: '0' })).toThrow(/CREATE_BATCH_SIZE/);
    expect(() => loadConfig({ CREATE_BATCH_SIZE: 'many' })).toThrow(/CREATE_BATCH_SIZE/);
  });

  it('reads WORKER_BATCH_SIZE, 64 by default, 1 to turn batching off', () => {
    expect(loadConfig({}).processing.batchSize).toBe(64);
    expect(loadConfig({ WORKER_BATCH_SIZE: '1' }).processing.batchSize).toBe(1);
    expect(() => loadConfig({ WORKER_BATCH_SIZE: '0' })).toThrow(/WORKER_BATCH_SIZE/);
    expect(() => loadConfig({ WORKER_BATCH_SIZE: '1001' })).toThrow(/WORKER_BATCH_SIZE/);
  });

  it('reads the provider webhook replay windows, with 5 minutes and 6 hours by default', () => {
    expect(loadConfig({}).providerWebhooks).toMatchObject({ toleranceMs: 300_000, leanMaxAgeMs: 21_600_000 });
    expect(loadConfig({ PROVIDER_WEBHOOK_TOLERANCE_MS: '60000', LEAN_WEBHOOK_MAX_AGE_MS: '3600000' }).providerWebhooks).toMatchObject({
      toleranceMs: 60_000,
      leanMaxAgeMs: 3_600_000,
    });
  });

  it('reads explicit Binance credentials and strips trailing slashes', () => {
    const cfg = loadConfig({
      BINANCE_PAY_BASE_URL: 'http://127.0.0.1:9/prefix/',
      BINANCE_PAY_API_KEY: 'k',
      BINANCE_PAY_SECRET_KEY: 's',
      ADMIN_API_KEY: 'a'.repeat(32),
    });
    expect(cfg.binancePay).toEqual({ baseUrl: 'http://127.0.0.1:9/prefix', apiKey: 'k', secretKey: 's' });
  });
});
