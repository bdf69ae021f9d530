import { Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Database } from '../database/database.js';
import { PROVIDERS } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import { ReconciliationQueueService } from './reconciliation-queue.service.js';
import { dailyWindow, ReconciliationSettings } from './reconciliation-settings.js';

/** At most this many runs woken per sweep; the next sweep takes the rest. */
const SWEEP_BATCH = 100;

/**
 * Worker roles only. Each tick:
 * - re-enqueues runs without a live job, as src/processing/recovery-sweeper.ts does for
 *   refunds: queued for longer than the grace period (Redis lost the job, or the API could
 *   not enqueue), or running with an expired lease (the worker died). Waking is safe: the
 *   job id is the run id and an execution must claim the row first.
 * - with RECONCILIATION_DAILY_AT set, creates once past that time (UTC) the day's run of
 *   every enabled provider over the previous UTC day. Any number of workers may race: the
 *   unique index on (provider, from, to) of scheduled runs lets one insert win.
 */
@Injectable()
export class ReconciliationSweeper implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('ReconciliationSweeper');
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  /** The window start of the last day this process scheduled (skips the inserts until the next day). */
  private scheduledDay?: string;

  constructor(
    private readonly db: Database,
    private readonly queue: ReconciliationQueueService,
    private readonly providers: ProvidersService,
    private readonly settings: ReconciliationSettings,
  ) {}

  onApplicationBootstrap(): void {
    const schedule = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.running = this.tick()
          .catch((err) => this.logger.warn({ err: (err as Error).message }, 'reconciliation sweep failed'))
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

  async tick(): Promise<void> {
    await this.scheduleDaily();
    const n = await this.sweep();
    if (n > 0) this.logger.log(`woke ${n} reconciliation runs without a live job`);
  }

  /** One pass; returns how many runs were handed to the queue. */
  async sweep(): Promise<number> {
    const rows = await this.db.query<{ id: string }>(
      `SELECT id FROM reconciliation_runs
        WHERE (status = 'queued' AND updated_at < now() - $1 * interval '1 millisecond')
           OR (status = 'running' AND lease_until < now())
        ORDER BY updated_at
        LIMIT $2`,
      [this.settings.sweepGraceMs, SWEEP_BATCH],
    );
    for (const r of rows) {
      if (this.stopped) break;
      await this.queue.wake(r.id);
    }
    return rows.length;
  }

  /** Creates today's scheduled runs (previous UTC day) once past RECONCILIATION_DAILY_AT. */
  async scheduleDaily(now = new Date()): Promise<string[]> {
    if (!this.settings.dailyAt) return [];
    const window = dailyWindow(now, this.settings.dailyAt);
    if (!window || this.scheduledDay === window.from.toISOString()) return [];
    const created: string[] = [];
    for (const provider of PROVIDERS) {
      if (!this.providers.find(provider)?.isEnabled()) continue;
      const [row] = await this.db.query<{ id: string }>(
        `INSERT INTO reconciliation_runs (id, provider, from_at, to_at, status, scheduled, requested_by)
         VALUES ($1, $2, $3, $4, 'queued', true, 'scheduler')
         ON CONFLICT (provider, from_at, to_at) WHERE scheduled DO NOTHING
         RETURNING id`,
        [randomUUID(), provider, window.from, window.to],
      );
      if (row) {
        created.push(row.id);
        await this.queue.wake(row.id);
      }
    }
    this.scheduledDay = window.from.toISOString();
    if (created.length) this.logger.log({ runs: created, from: window.from.toISOString() }, 'scheduled daily reconciliation runs');
    return created;
  }
}
