import { Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import { Queue } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { AppConfig } from '../config/config.js';
import { queuePrefix, redisClient, REFUND_QUEUES } from '../processing/queues.js';
import { WEBHOOK_QUEUE } from '../webhooks/webhook-settings.js';

/**
 * Every BullMQ queue of the service: one per provider for refunds, one for merchant webhook
 * deliveries. Listed by name rather than taken from Nest's container because an API process
 * does not register the queues it only watches (the worker side is where they are registered).
 */
export const WATCHED_QUEUES = [...REFUND_QUEUES, WEBHOOK_QUEUE];

/**
 * Read access to the service's BullMQ queues for metrics and the ops dashboard. It holds its
 * own Queue objects on one shared, fail-fast Redis connection (no offline queue, one retry),
 * so a scrape or a dashboard page while Redis is away fails at once instead of hanging, and
 * nothing here shares a connection with the workers or the producers.
 */
@Injectable()
export class QueueInspector implements OnModuleDestroy {
  private readonly logger = new Logger('QueueInspector');
  private connection?: Redis | Cluster;
  private resolved?: Queue[];

  constructor(private readonly cfg: AppConfig) {}

  /** The watched queues (created on first use). */
  queues(): Queue[] {
    if (this.resolved) return this.resolved;
    this.connection = redisClient(this.cfg, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.connection.on('error', (err) => this.logger.debug({ err: err.message }, 'inspector connection error'));
    this.resolved = WATCHED_QUEUES.map((name) => {
      const queue = new Queue(name, { prefix: queuePrefix(this.cfg, name), connection: this.connection! });
      queue.on('error', (err) => this.logger.debug({ queue: name, err: err.message }, 'inspector queue error'));
      return queue;
    });
    return this.resolved;
  }

  async onModuleDestroy(): Promise<void> {
    if (this.resolved) await Promise.all(this.resolved.map((q) => q.close().catch(() => undefined)));
    this.connection?.disconnect();
  }
}
