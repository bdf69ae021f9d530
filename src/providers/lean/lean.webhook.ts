import { Controller, Headers, HttpCode, Logger, Post, Req } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { ApiProblems } from '../../openapi/problems.js';
import { ref } from '../../openapi/schemas.js';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Problem } from '../../common/problem.js';
import { AppConfig } from '../../config/config.js';
import { assertWithinWindow } from '../webhook-window.js';
import { Database } from '../../database/database.js';
import { RefundQueueService } from '../../processing/refund-queue.service.js';
import { LeanClient } from './lean.client.js';

/** `lean-signature: sha512=<hex HMAC-SHA512(rawBody, secret)>` (providers.md §3.6). */
export function verifyLeanSignature(secret: string, rawBody: Buffer, header: string | undefined): boolean {
  const match = header ? /^sha512=([0-9a-fA-F]{128})$/.exec(header.trim()) : null;
  if (!match) return false;
  const expected = createHmac('sha512', secret).update(rawBody).digest();
  return timingSafeEqual(expected, Buffer.from(match[1], 'hex'));
}

/**
 * POST /webhooks/lean. Lean's refund event names are not documented, so any verified event
 * whose payload references one of our refunds (refund_id or external_reference) is a hint:
 * the refund is made due now and polled, which leads to the same transition a poll would.
 *
 * Replays: Lean signs the body only, and the only time in it is the envelope's `timestamp`,
 * the event's time, unchanged on retries (which go on for 258 minutes). An event older than
 * LEAN_WEBHOOK_MAX_AGE_MS, dated more than PROVIDER_WEBHOOK_TOLERANCE_MS in the future, or
 * without a timestamp is refused with 401 and changes nothing. A replay inside that window
 * can only cause an extra poll.
 */
@ApiTags('Provider webhooks')
@Controller('webhooks')
export class LeanWebhookController {
  private readonly logger = new Logger('LeanWebhook');

  constructor(
    private readonly client: LeanClient,
    private readonly db: Database,
    private readonly queue: RefundQueueService,
    private readonly cfg: AppConfig,
  ) {}

  @Post('lean')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Lean events (called by Lean)',
    description: 'Verified with `lean-signature: sha512=<hex HMAC-SHA512(rawBody, LEAN_WEBHOOK_SECRET)>`; an event naming one of our refunds makes it due for a poll now. No API key: the signature authenticates.',
  })
  @ApiHeader({ name: 'lean-signature', required: true, description: 'sha512=<128 hex digits>' })
  @ApiBody({ schema: { type: 'object', additionalProperties: true, example: { type: 'refund.updated', payload: { refund_id: '…', external_reference: '…' } } } })
  @ApiOkResponse({ description: 'Acknowledged.', schema: ref('WebhookAck') })
  @ApiProblems('unauthorized')
  async receive(@Req() req: FastifyRequest & { rawBody?: Buffer }, @Headers('lean-signature') signature?: string) {
    const raw = req.rawBody;
    const secret = this.client.isEnabled() ? (await this.client.credentials()).webhookSecret : undefined;
    if (!raw || !secret || !verifyLeanSignature(secret, raw, signature)) {
      this.logger.warn('rejected a Lean webhook with a missing or invalid signature');
      throw new Problem('unauthorized', 'Invalid Lean webhook signature.');
    }
    let event: { type?: unknown; payload?: Record<string, unknown>; timestamp?: unknown } = {};
    try {
      const parsed: unknown = JSON.parse(raw.toString('utf8'));
      event = parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as typeof event) : {};
    } catch {
      // Signed by Lean but not JSON: nothing to act on, and nothing to retry.
      return { received: true };
    }
    const { toleranceMs, leanMaxAgeMs } = this.cfg.providerWebhooks;
    assertWithinWindow('Lean', 'timestamp', event.timestamp, { pastMs: leanMaxAgeMs, futureMs: toleranceMs });
    const p = event.payload && typeof event.payload === 'object' ? event.payload : {};
    const refundId = typeof p.refund_id === 'string' ? p.refund_id : null;
    const reference = typeof p.external_reference === 'string' ? p.external_reference : null;
    if (!refundId && !reference) return { received: true };
    const rows = await this.db.query<{ id: string }>(
      `SELECT id FROM refunds WHERE provider = 'lean'
          AND (($1::text IS NOT NULL AND provider_refund_id = $1) OR ($2::text IS NOT NULL AND provider_request_id = $2))`,
      [refundId, reference],
    );
    for (const r of rows) await this.queue.nudge(this.db, 'lean', r.id);
    this.logger.log({ type: event.type, refunds: rows.length }, 'Lean webhook: refunds to re-check');
    return { received: true };
  }
}
