import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { AppConfig } from '../config/config.js';
import { Database } from '../database/database.js';
import { isProviderName, ProviderName } from '../providers/provider.js';
import { RefundQueueService } from './refund-queue.service.js';

/** At most this many refunds re-enqueued per sweep; the next sweep takes the rest. */
const SWEEP_BATCH = 1_000;

/**
 * Re-enqueues accepted refunds that have no live job: a crash between commit and enqueue,
 * Redis restarted or flushed, a job dropped after its retries. A refund is presumed
 * jobless when its next check is overdue by more than the grace period and no worker
 * holds its lease. Re-adding is safe because the job id is the refund id (a live job
 * makes the add a no-op) and because the worker leases the row.
 */
@Injectable()
export class RecoverySweeper implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('RecoverySweeper');
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly db: Database,
    private readonly queues: RefundQueueService,
    private readonly cfg: AppConfig,
  ) {}

  onApplicationBootstrap(): void {
    const schedule = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.running = this.sweep()
          .then((n) => {
            if (n > 0) this.logger.log(`re-enqueued ${n} refunds without a live job`);
          })
          .catch((err) => this.logger.warn({ err: (err as Error).message }, 'sweep failed'))
          .finally(schedule);
      }, this.cfg.processing.sweepIntervalMs);
      this.timer.unref();
    };
    schedule();
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One pass; returns how many refunds were handed to the queues. */
  async sweep(): Promise<number> {
    const rows = await this.db.query<{ id: string; provider: string }>(
      `SELECT id, provider FROM refunds
        WHERE status IN ('queued', 'processing', 'requires_action')
          AND next_check_at < now() - make_interval(secs => $1::double precision / 1000)
          AND (lease_until IS NULL OR lease_until < now())
        ORDER BY next_check_at
        LIMIT $2`,
      [this.cfg.processing.sweepGraceMs, SWEEP_BATCH],
    );
    const byProvider = new Map<ProviderName, string[]>();
    for (const r of rows) {
      if (!isProviderName(r.provider)) continue;
      byProvider.set(r.provider, [...(byProvider.get(r.provider) ?? []), r.id]);
    }
    for (const [provider, ids] of byProvider) await this.queues.enqueueMany(provider, ids);
    return rows.length;
  }
}
