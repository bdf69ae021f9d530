import { Injectable, Logger } from '@nestjs/common';
import { LoopStep, SandboxLoop } from '../sandbox-loop.js';
import { DueWebhook, WebhookDeliveries } from '../sandbox-webhooks.js';
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

interface DueDelivery extends DueWebhook {
  /** The stored body, the same on every attempt. */
  body: string;
}

/**
 * The background half of the Lean emulator: settles due APPROVED refunds (reads also settle
 * lazily) and delivers webhooks (sandbox-webhooks.ts). Runs in every process that serves
 * the emulator; row locks (SKIP LOCKED) and claim leases keep processes from doing the
 * same work twice.
 */
@Injectable()
export class LeanSandboxWorker extends SandboxLoop {
  private readonly webhooks: WebhookDeliveries<DueDelivery>;

  constructor(
    private readonly emulator: LeanSandboxEmulator,
    store: LeanSandboxStore,
    private readonly credentials: LeanSandboxCredentials,
  ) {
    super(new Logger('LeanSandboxWorker'), POLL_INTERVAL_MS);
    this.webhooks = new WebhookDeliveries<DueDelivery>(store.background, this.logger, {
      table: 'sandbox.lean_webhooks',
      columns: ['body'],
      batch: DELIVERY_BATCH,
      timeoutMs: DELIVERY_TIMEOUT_MS,
      leaseMs: CLAIM_LEASE_MS,
      request: async (delivery) => {
        const { webhookSecret } = await this.credentials.lean();
        return { body: delivery.body, headers: { 'lean-signature': leanWebhookSignature(webhookSecret, delivery.body) } };
      },
      acknowledged: isWebhookAcknowledged,
      retryDelay: webhookRetryDelay,
      maxAttempts: WEBHOOK_RETRY_DELAYS_MS.length + 1,
    });
  }

  protected steps(): LoopStep[] {
    return [
      { what: 'settling refunds', run: () => this.emulator.settleDue(SETTLE_BATCH, true) },
      { what: 'delivering webhooks', run: () => this.webhooks.deliverDue(this.shutdown.signal) },
    ];
  }
}
