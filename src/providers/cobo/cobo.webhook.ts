import { Controller, Headers, HttpCode, Logger, Post, Req } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { ApiProblems } from '../../openapi/problems.js';
import { ref } from '../../openapi/schemas.js';
import { Problem } from '../../common/problem.js';
import { AppConfig } from '../../config/config.js';
import { assertWithinWindow } from '../webhook-window.js';
import { Database } from '../../database/database.js';
import { RefundOutcomeService } from '../../processing/refund-outcome.service.js';
import type { RefundRow } from '../../refunds/refund.row.js';
import { CoboClient } from './cobo.client.js';
import { verifyCoboResponse } from './cobo.signing.js';
import { outcomeOfRefund } from './cobo.transformers.js';

/**
 * POST /webhooks/cobo. Verified with Cobo's key over `rawBody|Biz-Timestamp`; anything
 * unverifiable gets 401 and changes nothing, and so does a webhook whose signed
 * Biz-Timestamp (set per delivery attempt) is further from our clock than
 * PROVIDER_WEBHOOK_TOLERANCE_MS (a replay; the body's created_timestamp stays the same on
 * every retry, so it cannot serve). `payment.refund.status.updated` is applied
 * like a poll result (idempotent, order-independent); other event types are acknowledged.
 */
@ApiTags('Provider webhooks')
@Controller('webhooks')
export class CoboWebhookController {
  private readonly logger = new Logger('CoboWebhook');

  constructor(
    private readonly client: CoboClient,
    private readonly db: Database,
    private readonly outcomes: RefundOutcomeService,
    private readonly cfg: AppConfig,
  ) {}

  @Post('cobo')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Cobo events (called by Cobo)',
    description: 'Verified with Cobo’s Ed25519 key over `rawBody|Biz-Timestamp`; `payment.refund.status.updated` is applied like a poll result, other types acknowledged. No API key: the signature authenticates.',
  })
  @ApiHeader({ name: 'Biz-Timestamp', required: true })
  @ApiHeader({ name: 'Biz-Resp-Signature', required: true })
  @ApiBody({ schema: { type: 'object', additionalProperties: true, example: { type: 'payment.refund.status.updated', data: { refund_id: 'R20250304-1001', request_id: 'r…', status: 'Completed' } } } })
  @ApiOkResponse({ description: 'Acknowledged.', schema: ref('WebhookAck') })
  @ApiProblems('unauthorized')
  async receive(
    @Req() req: FastifyRequest & { rawBody?: Buffer },
    @Headers('biz-timestamp') timestamp?: string,
    @Headers('biz-resp-signature') signature?: string,
  ) {
    const raw = req.rawBody;
    if (!raw || !timestamp || !signature || !this.client.isEnabled()) {
      throw new Problem('unauthorized', 'Missing Cobo signature headers.');
    }
    const tolerance = this.cfg.providerWebhooks.toleranceMs;
    assertWithinWindow('Cobo', 'Biz-Timestamp', timestamp, { pastMs: tolerance, futureMs: tolerance });
    if (!verifyCoboResponse(await this.client.webhookPublicKey(), raw, timestamp, signature)) {
      this.logger.warn('rejected a Cobo webhook with an invalid signature');
      throw new Problem('unauthorized', 'Invalid Cobo webhook signature.');
    }
    let event: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = JSON.parse(raw.toString('utf8'));
      event = parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
    } catch {
      event = undefined;
    }
    const data = event && typeof event.data === 'object' && event.data ? (event.data as Record<string, unknown>) : undefined;
    if (event?.type !== 'payment.refund.status.updated' || !data) {
      this.logger.log({ type: event?.type }, 'ignored Cobo webhook');
      return { received: true };
    }
    const requestId = typeof data.request_id === 'string' ? data.request_id : undefined;
    const refundId = typeof data.refund_id === 'string' ? data.refund_id : undefined;
    const refund =
      (requestId ? await this.outcomes.findByRequestId('cobo', requestId) : undefined) ??
      (refundId
        ? await this.db.one<RefundRow>(`SELECT * FROM refunds WHERE provider = 'cobo' AND provider_refund_id = $1`, [refundId])
        : undefined);
    if (!refund) {
      this.logger.warn({ requestId, refundId }, 'Cobo webhook for an unknown refund');
      return { received: true };
    }
    const outcome = outcomeOfRefund(data, refund.amount);
    if (outcome.kind === 'final' || outcome.kind === 'pending') {
      const result = await this.outcomes.apply(refund.id, outcome, 'webhook:cobo', requestId ?? refund.provider_request_id, { seen: refund });
      this.logger.log({ refundId: refund.id, status: data.status, result }, 'Cobo webhook applied');
    }
    return { received: true };
  }
}
