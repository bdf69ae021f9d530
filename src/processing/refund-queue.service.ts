import { Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import { JobsOptions, Queue } from 'bullmq';
import { withTimeout } from '../common/with-timeout.js';
import { AppConfig } from '../config/config.js';
import { Batcher } from '../common/batcher.js';
import { PROVIDERS, type ProviderName } from '../providers/provider.js';
import { bullConnection, closeRedis, queuePrefix, refundQueueName, type RefundJobData } from './queues.js';

/** Options of every refund job: id = refund id, so a refund has at most one live job. */
export const REFUND_JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  // Only unexpected errors (e.g. Postgres down mid-step) fail a job; the sweeper re-adds it later.
  attempts: 5,
  backoff: { type: 'exponential', delay: 1_000, jitter: 0.5 },
};

/** How long a hand-off waits for Redis before giving up (the row is already durable). */
const ENQUEUE_TIMEOUT_MS = 2_000;

/**
 * Hand-offs a process lets run without a caller waiting for them (see handOff): about a
 * second of creates at the measured ingest rate. Past it, creates wait for their own
 * hand-off again (up to ENQUEUE_TIMEOUT_MS each), so a slow Redis slows the creates.
 */
export const MAX_UNAWAITED_HANDOFFS = 1_000;

/**
 * Hands refunds to the workers. The hand-off is made durable by the database row (status
 * queued, next_check_at due): if Redis is down or the process dies right after the commit,
 * the recovery sweeper enqueues the refund later. Redis is an accelerator, not the record.
 */
@Injectable()
export class RefundQueueService implements OnModuleDestroy {
  private readonly logger = new Logger('RefundQueue');
  private readonly queues = {} as Record<ProviderName, Queue<RefundJobData>>;
  /** Jobs added while others are on their way to Redis go together (one addBulk round trip). */
  private readonly adders = {} as Record<ProviderName, Batcher<string, void>>;
  private readonly connection: ReturnType<typeof bullConnection>;
  /** Hand-offs on their way to Redis that no caller waits for (handOff). */
  private readonly handOffs = new Set<Promise<boolean>>();
  /** MAX_UNAWAITED_HANDOFFS; tests lower it. */
  maxUnawaitedHandOffs = MAX_UNAWAITED_HANDOFFS;
  /** Set when the module shuts down: from then on every create waits for its own add. */
  private closing = false;

  constructor(cfg: AppConfig) {
    // Producer connections fail fast while Redis is away (no offline queue), unlike the
    // workers' blocking connections, which must wait out reconnects.
    const connection = (this.connection = bullConnection(cfg, { enableOfflineQueue: false, maxRetriesPerRequest: 1 }));
    for (const provider of PROVIDERS) {
      const name = refundQueueName(provider);
      const queue = new Queue<RefundJobData>(name, { prefix: queuePrefix(cfg, name), connection });
      // Connection errors are reported by the calls that hit them; don't crash on the event.
      queue.on('error', (err) => this.logger.debug({ err: err.message }, 'producer connection error'));
      this.queues[provider] = queue;
      this.adders[provider] = new Batcher<string, void>(
        async (refundIds) => {
          // The timeout here, not only around the caller: a call that never settles would
          // otherwise keep its in-flight slot, and every later add would wait behind it.
          await this.addNow(provider, refundIds, ENQUEUE_TIMEOUT_MS);
          return refundIds.map(() => undefined);
        },
        // A refused addBulk fails all its adds (Redis away); the sweeper re-adds them from the rows.
        // An add no one waits for any more (enqueue's timeout) is dropped rather than sent late,
        // so a hung Redis does not pile adds up here.
        { maxBatch: 64, maxInFlight: 2, splitOn: () => false, maxWaitMs: ENQUEUE_TIMEOUT_MS },
      );
    }
  }

  async onModuleDestroy(): Promise<void> {
    // Let the hand-offs of answered creates reach Redis before the connection closes (each
    // gives up after ENQUEUE_TIMEOUT_MS; one that does not arrive is the sweeper's). Nest
    // closes the HTTP server only after this hook: creates that arrive meanwhile wait for
    // their own add (`closing`), and once the queues are closed below, theirs fails and is
    // the sweeper's, as before.
    this.closing = true;
    await Promise.all([...this.handOffs]);
    await Promise.all(Object.values(this.queues).map((q) => q.close().catch(() => undefined)));
    await closeRedis(this.connection);
  }

  queue(provider: ProviderName): Queue<RefundJobData> {
    return this.queues[provider];
  }

  /** Adds the refund's job; returns false (after logging) when Redis could not take it. */
  async enqueue(provider: ProviderName, refundId: string, delayMs = 0): Promise<boolean> {
    try {
      await withTimeout<unknown>(
        delayMs === 0
          ? this.adders[provider].submit(refundId)
          : this.queues[provider].add('refund', { refundId }, { ...REFUND_JOB_OPTIONS, jobId: refundId, delay: delayMs }),
        ENQUEUE_TIMEOUT_MS,
      );
      return true;
    } catch (err) {
      this.logger.warn({ refundId, err: (err as Error).message }, 'enqueue failed; the sweeper will recover it');
      return false;
    }
  }

  /**
   * Starts adding the refund's job and returns without waiting for Redis, so a create is
   * answered once its row is committed. The row (queued, due now) is the hand-off's record:
   * an add that fails, times out or dies with the process is the recovery sweeper's, exactly
   * as when the caller waited (enqueue never made a create fail). Not waiting took 11–23 %
   * off a create's p99 at half the closed loop's rate, open loop (docs/performance.md,
   * finding 65).
   *
   * Waits for this hand-off after all when MAX_UNAWAITED_HANDOFFS are already on their way
   * (then Redis is slower than the creates arrive, and waiting is what slows them down), and
   * once the module is shutting down. `onAdded` runs when the job is in Redis (for the stage
   * metric); not for an add that failed or was given up.
   */
  async handOff(provider: ProviderName, refundId: string, onAdded?: () => void): Promise<void> {
    // Started on the next turn of the event loop, after the answer is written: building and
    // sending the add costs the API's thread more than the wait for Redis's reply, and an
    // add started in this turn delays the answer by that much (finding 65).
    const added = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.enqueue(provider, refundId))
      .then((ok) => {
        try {
          if (ok) onAdded?.();
        } catch {
          // a metric must not fail a hand-off
        }
        return ok;
      })
      .finally(() => this.handOffs.delete(added));
    this.handOffs.add(added);
    if (this.closing || this.handOffs.size > this.maxUnawaitedHandOffs) await added;
  }

  /** Hand-offs started by handOff that have not settled yet (for tests). */
  get handOffsInFlight(): number {
    return this.handOffs.size;
  }

  /**
   * Makes a refund due now and wakes its job (a webhook said something changed). The row's
   * next_check_at is the schedule's truth; the job is promoted from the delayed set, or
   * re-added when it is missing.
   */
  async nudge(db: { query: (sql: string, params: unknown[]) => Promise<unknown[]> }, provider: ProviderName, refundId: string): Promise<void> {
    const rows = await db.query(
      `UPDATE refunds SET next_check_at = now() WHERE id = $1 AND status = 'processing' RETURNING id`,
      [refundId],
    );
    if (rows.length === 0) return;
    await this.wake(provider, refundId);
  }

  /** Wakes the refund's job (promotes it from the delayed set), or adds one when it is missing. */
  async wake(provider: ProviderName, refundId: string): Promise<void> {
    try {
      const job = await this.queues[provider].getJob(refundId);
      if (job && (await job.isDelayed())) await job.promote();
      else if (!job) await this.enqueue(provider, refundId);
    } catch (err) {
      this.logger.warn({ refundId, err: (err as Error).message }, 'could not wake the refund job; the sweeper will');
    }
  }

  /**
   * Drops the waiting jobs of refunds that nothing can move any more (a terminal status,
   * which no ops action leaves either). A provider's webhook makes most refunds final before
   * their first poll is due; without this, each one's delayed job would still wake, be
   * claimed, find the refund final and complete: BullMQ's events and set moves, a share of a
   * claim statement and the worker's handling, for nothing. The removal is a script call too,
   * but a lighter one: ~10 % fewer Redis commands per refund (docs/performance.md, finding 53).
   *
   * Best effort, and not waited for by the caller: BullMQ will not remove an active
   * (locked) job, and a job left behind, or one this misses because Redis is away, does
   * what it did before: wakes and finds the refund final. An active job whose lock has
   * expired (a CPU-starved worker) is removed; its worker's completion then fails with a
   * missing key and logs it, and the refund, final, is not touched. Only terminal refunds,
   * never `failed`: an ops retry of a failed refund re-adds its job under the same id, and a
   * removal landing after it would take the new job (the sweeper would recover it, late).
   */
  retire(provider: ProviderName, refundIds: readonly string[]): void {
    for (const refundId of refundIds) {
      // Refund jobs have no children: skip the script's look-ups for them (five commands).
      this.queues[provider].remove(refundId, { removeChildren: false }).catch((err: Error) =>
        this.logger.debug({ refundId, err: err.message }, 'could not remove a final refund’s job; it will find the refund final'),
      );
    }
  }

  /** Adds many jobs at once (no-ops for refunds that already have a job). */
  async enqueueMany(provider: ProviderName, refundIds: string[]): Promise<void> {
    if (refundIds.length === 0) return;
    await this.addNow(provider, refundIds, ENQUEUE_TIMEOUT_MS * 5);
  }

  /** One addBulk of due-now jobs, within `timeoutMs`. */
  private async addNow(provider: ProviderName, refundIds: string[], timeoutMs: number): Promise<void> {
    await withTimeout(
      this.queues[provider].addBulk(
        refundIds.map((refundId) => ({ name: 'refund', data: { refundId }, opts: { ...REFUND_JOB_OPTIONS, jobId: refundId } })),
      ),
      timeoutMs,
    );
  }
}
