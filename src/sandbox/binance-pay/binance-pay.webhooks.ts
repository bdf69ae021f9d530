import { Injectable, Logger } from '@nestjs/common';
import { binanceCertSerial, binanceNonce, signBinanceWebhook } from '../../providers/binance-pay/binance-pay.signing.js';
import { SandboxCredentials } from '../sandbox-credentials.js';
import { LoopStep, SandboxLoop } from '../sandbox-loop.js';
import { SandboxStore } from '../sandbox-store.js';
import { DueWebhook, WebhookDeliveries } from '../sandbox-webhooks.js';
import { BinancePayEmulator } from './binance-pay.emulator.js';
import { WEBHOOK_RETRY_DELAYS_MS, isWebhookAcknowledged, webhookRetryDelay } from './binance-pay.rules.js';

/** How often each serving process looks for due settlements and deliveries. */
const POLL_INTERVAL_MS = 200;
/** Due refunds taken per settlement transaction (with the others due on their orders), and transactions per round at most. */
const SETTLE_BATCH = 50;
const MAX_SETTLE_BATCHES_PER_ROUND = 20;
/** Deliveries sent at once. */
const DELIVERY_BATCH = 50;
/** Upper bound of one delivery; a receiver that does not answer in time counts as failed. */
const DELIVERY_TIMEOUT_MS = 5_000;
/** A claimed delivery is invisible to other processes this long; it must exceed a whole batch (the timeout, and recording). */
const CLAIM_LEASE_MS = 30_000;

interface DueDelivery extends DueWebhook {
  /** The stored body, the same on every attempt. */
  body: string;
}

/**
 * The background half of the emulator, in two loops: BinancePaySettlement settles due
 * refunds (the query paths also settle lazily), and this one delivers their webhooks
 * (sandbox-webhooks.ts). Apart, so a round of slow deliveries (up to seconds under load)
 * does not hold up settling, and with it the webhooks of everything due meanwhile. Both run
 * in every process that serves the emulator; Postgres row locks (SKIP LOCKED) and claim
 * leases keep the processes from doing the same work twice.
 */
@Injectable()
export class BinancePayWebhooks extends SandboxLoop {
  private readonly webhooks: WebhookDeliveries<DueDelivery>;

  constructor(
    private readonly emulator: BinancePayEmulator,
    store: SandboxStore,
    private readonly credentials: SandboxCredentials,
  ) {
    super(new Logger('BinancePaySandboxWebhooks'), POLL_INTERVAL_MS);
    this.webhooks = new WebhookDeliveries<DueDelivery>(store.background, this.logger, {
      table: 'sandbox.binance_webhooks',
      columns: ['body'],
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
    return [{ what: 'delivering webhooks', run: () => this.webhooks.deliverDue(this.shutdown.signal) }];
  }

  /** A fresh timestamp, nonce and signature per attempt, over the same stored body. */
  private async signed(delivery: DueDelivery): Promise<{ body: string; headers: Record<string, string> }> {
    const merchant = await this.credentials.binancePayMerchant();
    const timestamp = String(Date.now());
    const nonce = binanceNonce();
    return {
      body: delivery.body,
      headers: {
        'BinancePay-Certificate-SN': binanceCertSerial(merchant.webhookPublicKeyPem),
        'BinancePay-Nonce': nonce,
        'BinancePay-Timestamp': timestamp,
        'BinancePay-Signature': signBinanceWebhook(merchant.webhookPrivateKeyPem, timestamp, nonce, delivery.body),
      },
    };
  }
}

/**
 * Settles due refunds a batch at a time, while batches come back full (bounded per round),
 * and wakes the delivery loop when it settled any, so their webhooks go out at once rather
 * than at the delivery loop's next tick.
 */
@Injectable()
export class BinancePaySettlement extends SandboxLoop {
  constructor(
    private readonly emulator: BinancePayEmulator,
    private readonly webhooks: BinancePayWebhooks,
  ) {
    super(new Logger('BinancePaySandboxSettlement'), POLL_INTERVAL_MS);
  }

  protected steps(): LoopStep[] {
    return [{ what: 'settling refunds', run: () => this.settleDue() }];
  }

  private async settleDue(): Promise<void> {
    let taken = 0;
    try {
      for (let i = 0; i < MAX_SETTLE_BATCHES_PER_ROUND && !this.stopped; i++) {
        const n = await this.emulator.settleAllDue(SETTLE_BATCH);
        taken += n;
        if (n < SETTLE_BATCH) return;
      }
    } finally {
      if (taken > 0) this.webhooks.wake();
    }
  }
}
