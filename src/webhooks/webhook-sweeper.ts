import { Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { Database } from '../database/database.js';
import { WebhookQueueService } from './webhook-queue.service.js';
import { WebhookSettings } from './webhook-settings.js';

/** At most this many deliveries woken per sweep; the next sweep takes the rest. */
const SWEEP_BATCH = 500;

/**
 * Re-enqueues pending deliveries that have no live job (Redis restarted or flushed, a crash
 * between the dispatcher's commit and its enqueue, a job dropped after its retries), as
 * src/processing/recovery-sweeper.ts does for refunds. A delivery is presumed jobless when
 * its next attempt is overdue by more than the grace period; an attempt in flight holds a
 * lease (next_attempt_at in the future), so it is never taken for lost. Waking is safe:
 * the job id is the delivery id, and the attempt itself claims the row.
 */
@Injectable()
export class WebhookSweeper implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('WebhookSweeper');
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly db: Database,
    private readonly queue: WebhookQueueService,
    private readonly settings: WebhookSettings,
  ) {}

  onApplicationBootstrap(): void {
    const schedule = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.running = this.sweep()
          .then((n) => {
            if (n > 0) this.logger.log(`woke ${n} overdue webhook deliveries`);
          })
          .catch((err) => this.logger.warn({ err: (err as Error).message }, 'webhook sweep failed'))
          .finally(schedule);
      }, this.settings.sweepIntervalMs);
      this.timer.unref();
    };
    schedule();
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One pass; returns how many deliveries were handed to the queue. */
  async sweep(): Promise<number> {
    const rows = await this.db.query<{ id: string }>(
      `SELECT d.id FROM webhook_deliveries d
         JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL
        WHERE d.status = 'pending'
          AND d.next_attempt_at < now() - $1::float8 * interval '1 millisecond'
        ORDER BY d.next_attempt_at
        LIMIT $2`,
      [this.settings.sweepGraceMs, SWEEP_BATCH],
    );
    for (let i = 0; i < rows.length && !this.stopped; i += 50) {
      await Promise.all(rows.slice(i, i + 50).map((r) => this.queue.wake(r.id)));
    }
    return rows.length;
  }
}
