import { BullModule } from '@nestjs/bullmq';
import { DynamicModule, Injectable, OnApplicationShutdown } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { AppConfig } from '../config/config.js';
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

/** The part of the configuration that says how to reach Redis. */
type RedisTarget = Pick<AppConfig, 'redisUrl' | 'redisCluster'>;

/**
 * A Redis client for REDIS_URL: a standalone connection, or with REDIS_CLUSTER=true a cluster
 * client seeded from that node (it learns the others). `extra` applies to every node.
 */
export function redisClient(cfg: RedisTarget, extra: RedisOptions = {}): Redis | Cluster {
  const options: RedisOptions = { ...redisOptions(cfg.redisUrl), ...extra };
  if (!cfg.redisCluster) return new Redis(options);
  // A cluster has database 0 only (config.ts rejects a URL naming another one).
  const { host, port, db: _db, lazyConnect, enableOfflineQueue, ...nodeOptions } = options;
  return new Cluster([{ host: host ?? '127.0.0.1', port: port ?? 6379 }], {
    redisOptions: nodeOptions,
    lazyConnect,
    enableOfflineQueue: enableOfflineQueue ?? true,
    // TLS: connect to the nodes by the names the cluster announces rather than resolved
    // addresses, so certificate checks see the host names (managed TLS clusters need this).
    ...(nodeOptions.tls ? { dnsLookup: (address: string, callback: (err: Error | null, address: string) => void) => callback(null, address) } : {}),
  });
}

/**
 * BullMQ's `connection` option. Standalone: ioredis options, so each Queue and Worker opens
 * (and closes) its own connections, as BullMQ does by default. Cluster: a cluster client,
 * which BullMQ cannot build from options; BullMQ treats a client it was given as shared and
 * never closes it, so whoever asked for it closes it (`closeRedis`) after its queues.
 */
export function bullConnection(cfg: RedisTarget, extra: RedisOptions): RedisOptions | Cluster {
  return cfg.redisCluster ? (redisClient(cfg, extra) as Cluster) : { ...redisOptions(cfg.redisUrl), ...extra };
}

/** Closes a client from `bullConnection()` (a no-op for options). */
export async function closeRedis(connection: RedisOptions | Redis | Cluster | undefined): Promise<void> {
  if (!(connection instanceof Redis) && !(connection instanceof Cluster)) return;
  try {
    await connection.quit();
  } catch {
    connection.disconnect();
  }
}

/**
 * The BullMQ key prefix of one queue. BullMQ's scripts touch several keys of a queue at once,
 * which in a Redis Cluster must hash to one slot: with REDIS_CLUSTER=true each queue's prefix
 * ends in a hash tag of its own name (`refunds:{refunds-binance_pay}`), so all of a queue's
 * keys share a slot while different queues spread over the shards. Standalone, the plain
 * QUEUE_PREFIX, as always (the keys of existing deployments do not move).
 */
export function queuePrefix(cfg: Pick<AppConfig, 'queuePrefix' | 'redisCluster'>, queueName: string): string {
  return cfg.redisCluster ? `${cfg.queuePrefix}:{${queueName}}` : cfg.queuePrefix;
}

/**
 * Registers a BullMQ queue (and so its @Processor worker) under its own prefix. The
 * connection comes from the root options (ProcessingModule).
 */
export function registerQueue(name: string): DynamicModule {
  return BullModule.registerQueueAsync({ name, inject: [AppConfig], useFactory: (cfg: AppConfig) => ({ prefix: queuePrefix(cfg, name) }) });
}

/**
 * The connection the workers' root options hand to every registered queue and worker: in
 * cluster mode one client, closed here once the application has shut down. Nest runs the
 * shutdown hooks of global modules last, in the reverse of the order they were added; this
 * is provided by ConfigModule, AppModule's first import, so its hook runs after
 * @nestjs/bullmq's (which closes the workers and the registered queues).
 */
@Injectable()
export class WorkerRedis implements OnApplicationShutdown {
  readonly connection: RedisOptions | Cluster;

  constructor(cfg: AppConfig) {
    // Workers block on Redis and must wait out reconnects (BullMQ requires null here).
    this.connection = bullConnection(cfg, { maxRetriesPerRequest: null });
  }

  async onApplicationShutdown(): Promise<void> {
    await closeRedis(this.connection);
  }
}
