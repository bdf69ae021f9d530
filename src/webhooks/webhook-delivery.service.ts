import { Injectable, Logger, OnModuleDestroy, Optional } from '@nestjs/common';
import { Database } from '../database/database.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { postWebhook, type PostResult } from './webhook-http.js';
import { WebhookSettings, retryDelayMs } from './webhook-settings.js';
import { signatureHeader } from './webhook-signing.js';

interface DeliveryForAttempt {
  id: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  max_attempts: number | null;
  next_attempt_at: Date | null;
  event_type: string;
  event_id: string;
  body: string;
  url: string;
  secret: string;
  disabled_at: Date | null;
  /** next_attempt_at - now() by the database clock, in ms (negative when overdue). */
  due_in_ms: number | null;
}

/** What the job does next: nothing more, or wait until `at` (node clock) and run again. */
export type AttemptResult = { done: true } | { done: false; at: Date };

/** Early timers are tolerated up to this much (BullMQ and Postgres clocks differ slightly). */
const EARLY_TOLERANCE_MS = 250;

export type AttemptOutcome = 'delivered' | 'retrying' | 'failed';

/**
 * One delivery attempt, driven by the delivery's job. The row is the truth: the job reads
 * it, claims it (pushing next_attempt_at out by a lease so the sweeper leaves it alone),
 * POSTs the stored body with a fresh signature, and records the attempt and the next
 * step in one transaction. A delivery already delivered or failed, or whose endpoint was
 * disabled, sends nothing.
 */
@Injectable()
export class WebhookDeliveryService implements OnModuleDestroy {
  private readonly logger = new Logger('WebhookDelivery');
  /** Aborts in-flight POSTs at shutdown; their deliveries are released uncounted. */
  private readonly shutdown = new AbortController();

  constructor(
    private readonly db: Database,
    private readonly settings: WebhookSettings,
    @Optional() private readonly metrics?: MetricsService,
  ) {}

  onModuleDestroy(): void {
    this.shutdown.abort();
  }

  async attempt(deliveryId: string): Promise<AttemptResult> {
    const row = await this.db.one<DeliveryForAttempt>(
      `SELECT d.id, d.status, d.attempts, d.max_attempts, d.next_attempt_at, d.event_type, d.event_id,
              COALESCE(d.body, d.payload::text) AS body, e.url, e.secret, e.disabled_at,
              (EXTRACT(EPOCH FROM (d.next_attempt_at - clock_timestamp())) * 1000)::float8 AS due_in_ms
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.id = $1`,
      [deliveryId],
    );
    if (!row || row.status !== 'pending') return { done: true };
    if (row.disabled_at) {
      await this.closeForDisabledEndpoint(row.id);
      return { done: true };
    }
    if (row.due_in_ms !== null && row.due_in_ms > EARLY_TOLERANCE_MS) return this.parkFor(row.due_in_ms);

    // Claim: only while due. The lease moves next_attempt_at into the future, so a second
    // claimer (a re-added job, a stalled job handed to another worker) finds nothing to do.
    const [claimed] = await this.db.query<{ attempts: number }>(
      `UPDATE webhook_deliveries
          SET next_attempt_at = clock_timestamp() + $2::float8 * interval '1 millisecond'
        WHERE id = $1 AND status = 'pending'
          AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp() + $3::float8 * interval '1 millisecond')
        RETURNING attempts`,
      [row.id, this.settings.leaseMs, EARLY_TOLERANCE_MS],
    );
    if (!claimed) {
      // Someone else claimed or rescheduled it: follow the row's schedule.
      const now = await this.db.one<{ status: string; due_in_ms: number | null }>(
        `SELECT status, (EXTRACT(EPOCH FROM (next_attempt_at - clock_timestamp())) * 1000)::float8 AS due_in_ms
           FROM webhook_deliveries WHERE id = $1`,
        [row.id],
      );
      if (!now || now.status !== 'pending') return { done: true };
      return this.parkFor(Math.max(now.due_in_ms ?? 0, 100));
    }

    const t = Math.floor(Date.now() / 1000);
    const result = await postWebhook(
      row.url,
      row.body,
      {
        'content-type': 'application/json',
        'user-agent': 'refund-orchestrator-webhooks/1',
        'refund-signature': signatureHeader(row.secret, row.body, t),
        'refund-event-id': `evt_${row.event_id}`,
        'refund-event-type': row.event_type,
      },
      { timeoutMs: this.settings.timeoutMs, allowPrivateTargets: this.settings.allowPrivateTargets, signal: this.shutdown.signal },
    );
    if (this.shutdown.signal.aborted && result.status === undefined) {
      // Interrupted by our own shutdown, not the merchant's fault: release it uncounted.
      await this.db
        .query(`UPDATE webhook_deliveries SET next_attempt_at = clock_timestamp() WHERE id = $1 AND status = 'pending'`, [row.id])
        .catch(() => undefined);
      throw new Error('shutting down during a webhook delivery');
    }
    return this.record(row, claimed.attempts + 1, result);
  }

  private async record(row: DeliveryForAttempt, number: number, result: PostResult): Promise<AttemptResult> {
    const delivered = result.error === undefined;
    const maxAttempts = row.max_attempts ?? this.settings.maxAttempts;
    const delay = delivered ? undefined : retryDelayMs(number, maxAttempts, this.settings);
    const outcome: AttemptOutcome = delivered ? 'delivered' : delay === undefined ? 'failed' : 'retrying';
    const error = result.error ? result.error.slice(0, 500) : null;

    const updated = await this.db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO webhook_delivery_attempts (delivery_id, number, http_status, error, latency_ms, outcome)
         VALUES ($1, $2, $3, $4, $5, $6)`,
        [row.id, number, result.status ?? null, error, result.latencyMs, outcome],
      );
      // Status and schedule move only while still pending (the endpoint may have been disabled meanwhile).
      const [d] = await tx.query<{ status: string; due_in_ms: number | null }>(
        `UPDATE webhook_deliveries
            SET attempts = GREATEST(attempts, $2),
                last_http_status = $3,
                last_error = $4,
                status = CASE WHEN status = 'pending' THEN $5::text ELSE status END,
                delivered_at = CASE WHEN status = 'pending' AND $5::text = 'delivered' THEN clock_timestamp() ELSE delivered_at END,
                next_attempt_at = CASE WHEN status = 'pending' AND $5::text = 'pending'
                                       THEN clock_timestamp() + $6::float8 * interval '1 millisecond' ELSE NULL END
          WHERE id = $1
          RETURNING status, (EXTRACT(EPOCH FROM (next_attempt_at - clock_timestamp())) * 1000)::float8 AS due_in_ms`,
        [row.id, number, result.status ?? null, error, outcome === 'retrying' ? 'pending' : outcome, delay ?? 0],
      );
      return d;
    });
    this.metrics?.webhookDeliveries.inc({ outcome });
    if (outcome === 'failed') {
      this.logger.warn({ deliveryId: row.id, eventId: row.event_id, attempts: number, error }, 'webhook delivery failed for good');
    }
    if (updated?.status === 'pending' && updated.due_in_ms !== null) return this.parkFor(updated.due_in_ms);
    return { done: true };
  }

  private async closeForDisabledEndpoint(id: string): Promise<void> {
    await this.db.query(
      `UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'endpoint disabled'
        WHERE id = $1 AND status = 'pending'`,
      [id],
    );
  }

  /** The next run, on the node clock, from a delay measured on the database clock. */
  private parkFor(ms: number): AttemptResult {
    return { done: false, at: new Date(Date.now() + Math.max(0, ms)) };
  }
}
