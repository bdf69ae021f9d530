import { Controller, Headers, HttpCode, Injectable, Logger, Post, Req } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { ApiProblems } from '../../openapi/problems.js';
import { parse } from 'lossless-json';
import { Problem } from '../../common/problem.js';
import { AppConfig } from '../../config/config.js';
import { assertWithinWindow } from '../webhook-window.js';
import { Database } from '../../database/database.js';
import { RefundOutcomeService } from '../../processing/refund-outcome.service.js';
import type { RefundRow } from '../../refunds/refund.row.js';
import { BinancePayClient } from './binance-pay.client.js';
import { verifyBinanceWebhook } from './binance-pay.signing.js';
import { outcomeOfRefundStatus, refundDetails } from './binance-pay.transformers.js';

/** Re-fetching certificates for an unknown serial at most this often (forged serials cost nothing). */
const CERT_REFRESH_MIN_MS = 30_000;

/** Binance's webhook signing certificates, fetched with a signed call and cached by serial. */
@Injectable()
export class BinancePayCertificates {
  private readonly logger = new Logger('BinancePayCertificates');
  private certs = new Map<string, string>();
  private lastFetch = 0;
  private inflight?: Promise<void>;

  constructor(private readonly client: BinancePayClient) {}

  async publicKey(serial: string): Promise<string | undefined> {
    if (this.certs.has(serial)) return this.certs.get(serial);
    // One fetch at a time however many webhooks arrive together; a webhook that arrives while
    // a fetch is running waits for it (the chaos suite caught those answered 401 before).
    if (!this.inflight && Date.now() - this.lastFetch > CERT_REFRESH_MIN_MS) {
      this.inflight = this.refresh().finally(() => (this.inflight = undefined));
    }
    if (this.inflight) await this.inflight;
    return this.certs.get(serial);
  }

  private async refresh(): Promise<void> {
    this.lastFetch = Date.now();
    const call = await this.client.post('/binancepay/openapi/certificates', '{}');
    if (call.kind !== 'envelope' || call.envelope.status !== 'SUCCESS' || !Array.isArray(call.envelope.data)) {
      this.logger.warn('could not fetch Binance Pay certificates');
      this.lastFetch = 0;
      return;
    }
    const next = new Map<string, string>();
    for (const c of call.envelope.data as Array<Record<string, unknown>>) {
      if (typeof c.certSerial === 'string' && typeof c.certPublic === 'string') next.set(c.certSerial, c.certPublic);
    }
    this.certs = next;
  }
}

/**
 * POST /webhooks/binance-pay. Verified over the raw bytes with Binance's RSA certificate;
 * anything unverifiable is refused with 401 and changes nothing, and so is a webhook whose
 * signed BinancePay-Timestamp (fresh on every delivery attempt) is further from our clock
 * than PROVIDER_WEBHOOK_TOLERANCE_MS (a replay). A verified notification is applied exactly
 * like a poll result, so duplicates within the window and late arrivals are harmless.
 */
@ApiTags('Provider webhooks')
@Controller('webhooks')
export class BinancePayWebhookController {
  private readonly logger = new Logger('BinancePayWebhook');

  constructor(
    private readonly certs: BinancePayCertificates,
    private readonly client: BinancePayClient,
    private readonly db: Database,
    private readonly outcomes: RefundOutcomeService,
    private readonly cfg: AppConfig,
  ) {}

  @Post('binance-pay')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Binance Pay notifications (called by Binance)',
    description: 'Verified over the raw body bytes with Binance’s RSA certificate; PAY_REFUND notifications are applied like a poll result (idempotent, any order), others acknowledged. No API key: the signature authenticates.',
  })
  @ApiHeader({ name: 'BinancePay-Certificate-SN', required: true })
  @ApiHeader({ name: 'BinancePay-Nonce', required: true })
  @ApiHeader({ name: 'BinancePay-Timestamp', required: true })
  @ApiHeader({ name: 'BinancePay-Signature', required: true })
  @ApiBody({ schema: { type: 'object', additionalProperties: true, example: { bizType: 'PAY_REFUND', bizId: '29383937493038367292', bizStatus: 'REFUND_SUCCESS', data: '{"merchantTradeNo":"…","refundInfo":{…}}' } } })
  @ApiOkResponse({ description: 'Acknowledged.', schema: { type: 'object', example: { returnCode: 'SUCCESS', returnMessage: null } } })
  @ApiProblems('unauthorized')
  async receive(
    @Req() req: FastifyRequest & { rawBody?: Buffer },
    @Headers('binancepay-certificate-sn') serial?: string,
    @Headers('binancepay-nonce') nonce?: string,
    @Headers('binancepay-timestamp') timestamp?: string,
    @Headers('binancepay-signature') signature?: string,
  ) {
    const raw = req.rawBody;
    if (!raw || !serial || !nonce || !timestamp || !signature || !this.client.isEnabled()) {
      throw new Problem('unauthorized', 'Missing Binance Pay signature headers.');
    }
    const tolerance = this.cfg.providerWebhooks.toleranceMs;
    // Before the signature: cheap, and a replayed genuine webhook is refused for what it is.
    assertWithinWindow('Binance Pay', 'BinancePay-Timestamp', timestamp, { pastMs: tolerance, futureMs: tolerance });
    const publicKey = await this.certs.publicKey(serial);
    if (!publicKey || !verifyBinanceWebhook(publicKey, timestamp, nonce, raw, signature)) {
      this.logger.warn({ serial }, 'rejected a Binance Pay webhook with an invalid signature');
      throw new Problem('unauthorized', 'Invalid Binance Pay webhook signature.');
    }

    const body = parseObject(raw.toString('utf8'));
    const inner = typeof body?.data === 'string' ? parseObject(body.data) : undefined;
    const info = inner && typeof inner.refundInfo === 'object' ? (inner.refundInfo as Record<string, unknown>) : undefined;
    const requestId = typeof info?.refundRequestId === 'string' ? info.refundRequestId : undefined;
    const bizStatus = typeof body?.bizStatus === 'string' ? body.bizStatus : undefined;
    if (body?.bizType !== 'PAY_REFUND' || !requestId || !bizStatus || !info) {
      // Signed by Binance but not a refund notification we act on: acknowledge so it is not resent.
      this.logger.log({ bizType: body?.bizType }, 'ignored Binance Pay webhook');
      return ack();
    }

    const refund = await this.outcomes.findByRequestId('binance_pay', requestId);
    if (!refund) {
      this.logger.warn({ requestId }, 'Binance Pay webhook for an unknown refund request id');
      return ack();
    }
    const outcome = outcomeOfRefundStatus(
      bizStatus,
      {
        providerStatus: bizStatus,
        details: refundDetails(info),
      },
      refund.amount,
    );
    if (outcome.kind === 'final' || outcome.kind === 'pending') {
      const result = await this.outcomes.apply(refund.id, outcome, 'webhook:binance_pay', requestId, { seen: refund });
      this.logger.log({ refundId: refund.id, bizStatus, result }, 'Binance Pay webhook applied');
    }
    return ack();
  }
}

function ack() {
  return { returnCode: 'SUCCESS', returnMessage: null };
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const v = parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
