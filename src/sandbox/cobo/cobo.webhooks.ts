import { Injectable, Logger } from '@nestjs/common';
import { signCoboResponse } from '../../providers/cobo/cobo.signing.js';
import { SandboxCredentials } from '../sandbox-credentials.js';
import { LoopStep, SandboxLoop } from '../sandbox-loop.js';
import { SandboxStore } from '../sandbox-store.js';
import { DueWebhook, WebhookDeliveries } from '../sandbox-webhooks.js';
import { CoboEmulator } from './cobo.emulator.js';
import { WEBHOOK_RETRY_DELAYS_MS, buildWebhookEvent, isWebhookAcknowledged, webhookRetryDelay } from './cobo.rules.js';

/** How often each serving process looks for due lifecycle steps and deliveries. */
const POLL_INTERVAL_MS = 200;
/** Bounded work per tick: refunds advanced, deliveries sent (concurrently). */
const ADVANCE_BATCH = 50;
const DELIVERY_BATCH = 20;
/** Cobo's delivery timeout (providers.md §2.5): no answer within it counts as failed. */
const DELIVERY_TIMEOUT_MS = 2_000;
/** A claimed delivery is invisible to other processes this long; it must exceed the timeout. */
const CLAIM_LEASE_MS = 30_000;

interface DueDelivery extends DueWebhook {
  event_id: string;
  /** The Refund snapshot (JSON text); the envelope around it is built per attempt. */
  data: string;
  created_ms: string;
}

/**
 * The background half of the Cobo emulator: moves refunds through their lifecycle (the
 * read paths also do it lazily) and delivers their webhooks (sandbox-webhooks.ts). Runs in
 * every process that serves the emulator; row locks (SKIP LOCKED) and claim leases keep
 * the processes from doing the same work twice.
 */
@Injectable()
export class CoboWebhooks extends SandboxLoop {
  private readonly webhooks: WebhookDeliveries<DueDelivery>;

  constructor(
    private readonly emulator: CoboEmulator,
    store: SandboxStore,
    private readonly credentials: SandboxCredentials,
  ) {
    super(new Logger('CoboSandboxWebhooks'), POLL_INTERVAL_MS);
    this.webhooks = new WebhookDeliveries<DueDelivery>(store.background, this.logger, {
      table: 'sandbox.cobo_webhooks',
      columns: ['event_id', 'data', 'created_ms'],
      batch: DELIVERY_BATCH,
      timeoutMs: DELIVERY_TIMEOUT_MS,
      leaseMs: CLAIM_LEASE_MS,
      request: (delivery) => this.signed(delivery),
      acknowledged: isWebhookAcknowledged,
      retryDelay: webhookRetryDelay,
      maxAttempts: WEBHOOK_RETRY_DELAYS_MS.length + 1,
    });
  }

  protected steps(): LoopStep[] {
    return [
      { what: 'advancing refunds', run: () => this.emulator.advanceAllDue(ADVANCE_BATCH, true) },
      { what: 'delivering webhooks', run: () => this.webhooks.deliverDue(this.shutdown.signal) },
    ];
  }

  /** The envelope's retry fields change per attempt, so each attempt builds and signs its own body. */
  private async signed(delivery: DueDelivery): Promise<{ body: string; headers: Record<string, string> }> {
    const keys = await this.credentials.coboEmulator();
    const now = Date.now();
    const body = buildWebhookEvent({
      eventId: delivery.event_id,
      url: delivery.url,
      refund: JSON.parse(delivery.data) as Record<string, unknown>,
      createdMs: Number(delivery.created_ms),
      attemptsMade: delivery.attempts,
      now,
    });
    const timestamp = String(now);
    return {
      body,
      headers: { 'Biz-Timestamp': timestamp, 'Biz-Resp-Signature': signCoboResponse(keys.emulatorSeed, body, timestamp) },
    };
  }
}
