import type { RedisOptions } from 'ioredis';
import type { ProviderName } from '../providers/provider.js';
import { PROVIDERS } from '../providers/provider.js';

/** One queue per provider, so a slow provider cannot starve the others' refunds. */
export function refundQueueName(provider: ProviderName): string {
  return `refunds-${provider}`;
}

export const REFUND_QUEUES = PROVIDERS.map(refundQueueName);

/** The job carries the refund id only: the database row is the truth. */
export interface RefundJobData {
  refundId: string;
}

/** ioredis options from a redis:// or rediss:// URL. */
export function redisOptions(url: string): RedisOptions {
  const u = new URL(url);
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 6379,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: Number.isInteger(db) ? db : 0,
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}
