import { Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { LeanSandboxCredentials } from './lean.credentials.js';
import { LeanSandboxEmulator } from './lean.emulator.js';
import { WEBHOOK_RETRY_DELAYS_MS, isWebhookAcknowledged, leanWebhookSignature, webhookRetryDelay } from './lean.rules.js';
import { LeanSandboxStore } from './lean.store.js';

/** How often each serving process looks for due settlements and deliveries. */
const POLL_INTERVAL_MS = 200;
/** Bounded work per tick: refunds settled, deliveries sent (concurrently). */
const SETTLE_BATCH = 100;
const DELIVERY_BATCH = 20;
/** Lean allows the receiver 10 s to answer 200; the sandbox allows 2 s. */
export const DELIVERY_TIMEOUT_MS = 2_000;
/** A claimed delivery is invisible to other processes this long; it must exceed the timeout. */
const CLAIM_LEASE_MS = 15_000;

interface DueDelivery {
  id: string;
  url: string;
  body: string;
  attempts: number;
}

/**
 * The background half of the Lean emulator: settles due APPROVED refunds (reads also settle
 * lazily) and delivers webhooks. Runs in every process that serves the emulator; row locks
 * (SKIP LOCKED) and claim leases keep processes from doing the same work twice, and a
 * process that dies mid-delivery leaves the row to be retried after the lease.
 */
@Injectable()
export class LeanSandboxWorker implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('LeanSandboxWorker');
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private readonly shutdown = new AbortController();

  constructor(
    private readonly emulator: LeanSandboxEmulator,
    private readonly store: LeanSandboxStore,
    private readonly credentials: LeanSandboxCredentials,
  ) {}

  onApplicationBootstrap(): void {
    this.schedule(0);
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.shutdown.abort();
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => {
        this.running = undefined;
        this.schedule(POLL_INTERVAL_MS);
      });
    }, delayMs);
  }

  /** One round; never throws, so the loop keeps going through a database hiccup. */
  async tick(): Promise<void> {
    try {
      await this.emulator.settleDue(SETTLE_BATCH, true);
    } catch (err) {
      if (!this.stopped) this.logger.warn(`settling refunds failed: ${(err as Error).message}`);
    }
    try {
      await this.deliverDue();
    } catch (err) {
      if (!this.stopped) this.logger.warn(`delivering webhooks failed: ${(err as Error).message}`);
    }
  }

  private async deliverDue(): Promise<void> {
    if (this.stopped) return;
    // Claim by pushing next_attempt_at past the lease: the row stays PENDING, so a crash
    // mid-delivery only delays it. SKIP LOCKED lets concurrent processes claim disjoint rows.
    const claimed = await this.store.db.query<DueDelivery>(
      `UPDATE sandbox.lean_webhooks w
          SET next_attempt_at = now() + $2 * interval '1 millisecond'
        WHERE w.id IN (
          SELECT id FROM sandbox.lean_webhooks
           WHERE status = 'PENDING' AND next_attempt_at <= now()
           ORDER BY next_attempt_at, id
           LIMIT $1
           FOR UPDATE SKIP LOCKED)
        RETURNING w.id, w.url, w.body, w.attempts`,
      [DELIVERY_BATCH, CLAIM_LEASE_MS],
    );
    await Promise.all(claimed.map((delivery) => this.deliver(delivery)));
  }

  private async deliver(delivery: DueDelivery): Promise<void> {
    let error: string | undefined;
    try {
      const { webhookSecret } = await this.credentials.lean();
      const response = await fetch(delivery.url, {
        method: 'POST',
        redirect: 'manual',
        headers: {
          'content-type': 'application/json',
          'lean-signature': leanWebhookSignature(webhookSecret, delivery.body),
        },
        body: delivery.body,
        signal: AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(DELIVERY_TIMEOUT_MS)]),
      });
      const text = await response.text();
      if (!isWebhookAcknowledged(response.status)) error = `HTTP ${response.status}: ${text.slice(0, 200)}`;
    } catch (err) {
      if (this.shutdown.signal.aborted) {
        // Interrupted by our own shutdown: not the receiver's fault, so release it uncounted.
        await this.store.db
          .query('UPDATE sandbox.lean_webhooks SET next_attempt_at = now() WHERE id = $1', [delivery.id])
          .catch(() => undefined);
        return;
      }
      const cause = (err as { cause?: { message?: string } }).cause?.message;
      error = `${(err as Error).message}${cause ? `: ${cause}` : ''}`;
    }
    await this.record(delivery, error);
  }

  private async record(delivery: DueDelivery, error: string | undefined): Promise<void> {
    const attempts = delivery.attempts + 1;
    if (error === undefined) {
      await this.store.db.query(
        `UPDATE sandbox.lean_webhooks SET status = 'DELIVERED', attempts = $2, delivered_at = now(), last_error = NULL
          WHERE id = $1`,
        [delivery.id, attempts],
      );
      return;
    }
    const retryIn = webhookRetryDelay(attempts);
    if (retryIn === undefined) {
      this.logger.warn(`webhook ${delivery.id} failed after ${WEBHOOK_RETRY_DELAYS_MS.length + 1} attempts: ${error}`);
    }
    await this.store.db.query(
      `UPDATE sandbox.lean_webhooks
          SET attempts = $2, last_error = $3,
              status = CASE WHEN $4::int IS NULL THEN 'FAILED' ELSE 'PENDING' END,
              next_attempt_at = now() + coalesce($4::int, 0) * interval '1 millisecond'
        WHERE id = $1`,
      [delivery.id, attempts, error.slice(0, 1000), retryIn ?? null],
    );
  }
}
