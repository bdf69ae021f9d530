import { Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Database } from '../database/database.js';
import type { RefundRow } from '../refunds/refund.row.js';
import { buildEvent, type RefundEventRow } from './webhook-event.js';
import { WebhookQueueService } from './webhook-queue.service.js';
import { WebhookSettings } from './webhook-settings.js';

/** Batches taken back to back in one tick while the outbox is full, before yielding. */
const MAX_BATCHES_PER_TICK = 20;

/**
 * Turns committed status changes into webhook deliveries. refund_event_outbox rows are
 * written in the same transaction as the status change (RefundStateService), so a change
 * that rolls back leaves nothing here and one that commits is never lost. Each tick takes
 * a batch with FOR UPDATE SKIP LOCKED (several worker processes share the work), creates
 * one delivery per enabled endpoint of the refund's merchant (ON CONFLICT DO NOTHING on
 * (endpoint_id, event_id)) and deletes the outbox rows, all in one transaction; the jobs
 * are added after the commit (a lost add is re-done by the sweeper).
 */
@Injectable()
export class WebhookDispatcher implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('WebhookDispatcher');
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
        this.running = this.tick()
          .catch((err) => this.logger.warn({ err: (err as Error).message }, 'webhook dispatch failed'))
          .finally(schedule);
      }, this.settings.dispatchIntervalMs);
      this.timer.unref();
    };
    schedule();
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private async tick(): Promise<void> {
    for (let i = 0; i < MAX_BATCHES_PER_TICK && !this.stopped; i++) {
      const { events, deliveryIds } = await this.dispatchBatch();
      if (deliveryIds.length > 0) {
        await this.queue.enqueueMany(deliveryIds).catch((err) =>
          this.logger.warn({ err: (err as Error).message, count: deliveryIds.length }, 'enqueue failed; the sweeper will recover them'),
        );
      }
      if (events < this.settings.dispatchBatch) return;
    }
  }

  /** One transaction: returns how many outbox rows it consumed and the deliveries it created. */
  async dispatchBatch(): Promise<{ events: number; deliveryIds: string[] }> {
    return this.db.transaction(async (tx) => {
      const picked = await tx.query<{ event_id: string }>(
        `SELECT event_id FROM refund_event_outbox ORDER BY event_id LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [this.settings.dispatchBatch],
      );
      if (picked.length === 0) return { events: 0, deliveryIds: [] };
      const ids = picked.map((p) => p.event_id);

      const events = await tx.query<RefundEventRow>(
        `SELECT id, refund_id, to_status, created_at FROM refund_events WHERE id = ANY($1::bigint[]) ORDER BY id`,
        [ids],
      );
      const refunds = await tx.query<RefundRow>(`SELECT * FROM refunds WHERE id = ANY($1::uuid[])`, [
        [...new Set(events.map((e) => e.refund_id))],
      ]);
      const refundById = new Map(refunds.map((r) => [r.id, r]));
      const endpoints = await tx.query<{ id: string; merchant_id: string }>(
        `SELECT id, merchant_id FROM webhook_endpoints WHERE disabled_at IS NULL AND merchant_id = ANY($1::text[])`,
        [[...new Set(refunds.map((r) => r.merchant_id))]],
      );
      const endpointsOf = new Map<string, string[]>();
      for (const e of endpoints) endpointsOf.set(e.merchant_id, [...(endpointsOf.get(e.merchant_id) ?? []), e.id]);

      const rows = { id: [] as string[], endpoint: [] as string[], event: [] as string[], type: [] as string[], body: [] as string[] };
      for (const event of events) {
        const refund = refundById.get(event.refund_id);
        const targets = refund ? endpointsOf.get(refund.merchant_id) : undefined;
        if (!refund || !targets) continue;
        const payload = buildEvent(event, refund);
        const body = JSON.stringify(payload);
        for (const endpointId of targets) {
          rows.id.push(randomUUID());
          rows.endpoint.push(endpointId);
          rows.event.push(event.id);
          rows.type.push(payload.type);
          rows.body.push(body);
        }
      }

      let deliveryIds: string[] = [];
      if (rows.id.length > 0) {
        const inserted = await tx.query<{ id: string }>(
          `INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, body, status, next_attempt_at)
           SELECT u.id, u.endpoint_id, u.event_id, u.event_type, u.body::jsonb, u.body, 'pending', now()
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[]) AS u(id, endpoint_id, event_id, event_type, body)
           ON CONFLICT (endpoint_id, event_id) DO NOTHING
           RETURNING id`,
          [rows.id, rows.endpoint, rows.event, rows.type, rows.body],
        );
        deliveryIds = inserted.map((r) => r.id);
      }
      await tx.query(`DELETE FROM refund_event_outbox WHERE event_id = ANY($1::bigint[])`, [ids]);
      return { events: picked.length, deliveryIds };
    });
  }
}
