import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { actorOf, type AuthContext, merchantScope } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { Database } from '../database/database.js';
import { eventId } from './webhook-event.js';
import { webhookUrlProblem } from './webhook-http.js';
import { WebhookQueueService } from './webhook-queue.service.js';
import { WebhookSettings } from './webhook-settings.js';
import { newWebhookSecret } from './webhook-signing.js';

/** Enabled endpoints one merchant may have (each event is sent to every one of them). */
export const MAX_ENDPOINTS_PER_MERCHANT = 16;

interface EndpointRow {
  id: string;
  merchant_id: string;
  url: string;
  secret: string;
  created_at: Date;
  disabled_at: Date | null;
}

interface DeliveryRow {
  id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  status: string;
  attempts: number;
  last_http_status: number | null;
  last_error: string | null;
  created_at: Date;
  delivered_at: Date | null;
  next_attempt_at: Date | null;
}

function endpointJson(row: EndpointRow) {
  return {
    id: row.id,
    merchantId: row.merchant_id,
    url: row.url,
    createdAt: row.created_at.toISOString(),
    disabledAt: row.disabled_at ? row.disabled_at.toISOString() : null,
  };
}

function deliveryJson(row: DeliveryRow) {
  return {
    id: row.id,
    eventId: eventId(row.event_id),
    type: row.event_type,
    status: row.status,
    attempts: row.attempts,
    lastHttpStatus: row.last_http_status,
    lastError: row.last_error,
    createdAt: row.created_at.toISOString(),
    deliveredAt: row.delivered_at ? row.delivered_at.toISOString() : null,
    nextAttemptAt: row.status === 'pending' && row.next_attempt_at ? row.next_attempt_at.toISOString() : null,
  };
}

/** The merchant a caller is confined to (null: every merchant); a merchant key without one sees nothing. */
function scopeOf(auth: AuthContext): string | null {
  if (auth.role === 'merchant') return merchantScope(auth) ?? '\u0001no-merchant';
  return null;
}

const DELIVERY_COLUMNS = `id, endpoint_id, event_id, event_type, status, attempts, last_http_status, last_error,
                          created_at, delivered_at, next_attempt_at`;

/**
 * Merchant webhook endpoints and their deliveries (refunds-api.md §10). Merchants manage
 * their own endpoints; ops read any and may redeliver. Another merchant's endpoint is
 * answered 404, like an unknown one.
 */
@Injectable()
export class WebhookEndpointsService {
  constructor(
    private readonly db: Database,
    private readonly queue: WebhookQueueService,
    private readonly settings: WebhookSettings,
  ) {}

  async create(auth: AuthContext, url: string) {
    const merchantId = auth.merchantId;
    if (auth.role !== 'merchant' || !merchantId) throw new Problem('forbidden', 'Webhook endpoints are created with a merchant key.');
    const problem = webhookUrlProblem(url, this.settings.allowPrivateTargets);
    if (problem) throw Problem.validation([{ field: 'url', message: problem }]);
    const secret = newWebhookSecret();
    const id = randomUUID();
    const row = await this.db.transaction(async (tx) => {
      // Serialises creations per merchant so the cap holds under concurrency.
      await tx.query(`SELECT id FROM merchants WHERE id = $1 FOR UPDATE`, [merchantId]);
      const [{ n }] = await tx.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM webhook_endpoints WHERE merchant_id = $1 AND disabled_at IS NULL`,
        [merchantId],
      );
      if (n >= MAX_ENDPOINTS_PER_MERCHANT) {
        throw new Problem('invalid_state', `At most ${MAX_ENDPOINTS_PER_MERCHANT} webhook endpoints per merchant; delete one first.`);
      }
      const [created] = await tx.query<EndpointRow>(
        `INSERT INTO webhook_endpoints (id, merchant_id, url, secret) VALUES ($1, $2, $3, $4) RETURNING *`,
        [id, merchantId, url, secret],
      );
      await this.audit(tx, auth, 'webhook_endpoint.create', id, { merchantId, url });
      return created;
    });
    return { id: row.id, url: row.url, secret, createdAt: row.created_at.toISOString() };
  }

  async list(auth: AuthContext, merchantIdFilter?: string) {
    const scope = scopeOf(auth);
    if (scope !== null && merchantIdFilter !== undefined && merchantIdFilter !== scope) return { data: [] };
    const merchantId = scope ?? merchantIdFilter ?? null;
    const rows = await this.db.query<EndpointRow>(
      `SELECT * FROM webhook_endpoints
        WHERE disabled_at IS NULL AND ($1::text IS NULL OR merchant_id = $1)
        ORDER BY created_at DESC, id DESC
        LIMIT 1000`,
      [merchantId],
    );
    return { data: rows.map(endpointJson) };
  }

  async get(auth: AuthContext, id: string) {
    return endpointJson(await this.load(auth, id));
  }

  /** Disables the endpoint (kept for its delivery history); pending deliveries end `failed`. */
  async disable(auth: AuthContext, id: string): Promise<void> {
    if (auth.role !== 'merchant') throw new Problem('forbidden', 'Webhook endpoints are deleted with the owning merchant key.');
    await this.db.transaction(async (tx) => {
      const [row] = await tx.query<EndpointRow>(
        `SELECT * FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 FOR UPDATE`,
        [id, auth.merchantId],
      );
      if (!row) throw new Problem('not_found', 'No such webhook endpoint.');
      if (row.disabled_at) return;
      await tx.query(`UPDATE webhook_endpoints SET disabled_at = now() WHERE id = $1`, [id]);
      await tx.query(
        `UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'endpoint disabled'
          WHERE endpoint_id = $1 AND status = 'pending'`,
        [id],
      );
      await this.audit(tx, auth, 'webhook_endpoint.disable', id, { merchantId: row.merchant_id, url: row.url });
    });
  }

  async deliveries(auth: AuthContext, id: string, limit = 20) {
    await this.load(auth, id);
    const rows = await this.db.query<DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1
        ORDER BY created_at DESC, event_id DESC LIMIT $2`,
      [id, limit],
    );
    return { data: rows.map(deliveryJson) };
  }

  /**
   * Sends the delivery again, same event and same body, as a new attempt. A delivered or
   * failed delivery gets exactly one more attempt (no automatic retries after it); a
   * pending one is simply made due now, keeping its retry schedule.
   */
  async redeliver(auth: AuthContext, id: string, deliveryId: string) {
    const endpoint = await this.load(auth, id);
    if (endpoint.disabled_at) throw new Problem('invalid_state', 'The webhook endpoint is disabled.');
    const row = await this.db.transaction(async (tx) => {
      const [updated] = await tx.query<DeliveryRow>(
        `UPDATE webhook_deliveries
            SET max_attempts = CASE WHEN status = 'pending' THEN max_attempts ELSE attempts + 1 END,
                status = 'pending',
                next_attempt_at = now()
          WHERE id = $1 AND endpoint_id = $2
          RETURNING ${DELIVERY_COLUMNS}`,
        [deliveryId, id],
      );
      if (!updated) throw new Problem('not_found', 'No such delivery.');
      await this.audit(tx, auth, 'webhook_delivery.redeliver', deliveryId, { endpointId: id, eventId: eventId(updated.event_id) });
      return updated;
    });
    await this.queue.wake(row.id);
    return deliveryJson(row);
  }

  private async load(auth: AuthContext, id: string): Promise<EndpointRow> {
    const scope = scopeOf(auth);
    const row = await this.db.one<EndpointRow>(
      `SELECT * FROM webhook_endpoints WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2)`,
      [id, scope],
    );
    if (!row) throw new Problem('not_found', 'No such webhook endpoint.');
    return row;
  }

  private async audit(
    tx: { query: Database['query'] },
    auth: AuthContext,
    action: string,
    subject: string,
    detail: Record<string, unknown>,
  ): Promise<void> {
    await tx.query(`INSERT INTO audit_events (actor, action, subject, detail) VALUES ($1, $2, $3, $4)`, [actorOf(auth), action, subject, detail]);
  }
}
