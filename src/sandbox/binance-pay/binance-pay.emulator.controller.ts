import { Controller, Get, Injectable, Logger, Post, Req, Res } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { SandboxCredentials } from '../sandbox-credentials.js';
import { chance } from '../sandbox-faults.js';
import { SandboxControlError, SandboxFaultsController, control, sendAnswer, serveEmulatorCall, type SandboxRequest } from '../sandbox-http.js';
import { BinancePayFaults } from './binance-pay.faults.js';
import { BinancePayEmulator } from './binance-pay.emulator.js';
import {
  BinanceCode,
  BinanceFail,
  checkBinanceAuth,
  failEnvelope,
  parseBinanceBody,
  parseOrderQuery,
  parseRefundQuery,
  parseRefundRequest,
  successEnvelope,
} from './binance-pay.rules.js';

type MerchantWork = (body: Record<string, unknown>, faults: BinancePayFaults) => Promise<unknown>;

/**
 * The transport of the emulated merchant API: faults, authentication over the raw bytes,
 * JSON parsing, and answers in Binance's envelope whatever happens. A provider (not just
 * controller code) so SandboxBodyErrors can answer through it when the body parsers
 * rejected the body before any route ran.
 */
@Injectable()
export class BinancePayMerchantHttp {
  private readonly logger = new Logger('BinancePaySandbox');

  constructor(
    private readonly emulator: BinancePayEmulator,
    private readonly credentials: SandboxCredentials,
  ) {}

  handle(req: RawBodyRequest<SandboxRequest>, res: FastifyReply, work: MerchantWork): Promise<void> {
    // Taken before any injected latency: the timestamp window is about when the request came in.
    const arrivedAt = Date.now();
    return serveEmulatorCall<BinancePayFaults>(req, res, {
      faults: () => this.emulator.faults(),
      refusal: (faults) => {
        if (chance(faults.errorRate)) {
          return { fault: 'server_error', status: 500, text: failEnvelope(BinanceCode.UNKNOWN_ERROR, 'Sandbox: injected server error.') };
        }
        if (chance(faults.rateLimitRate)) {
          return {
            fault: 'rate_limited',
            status: 429,
            text: failEnvelope(BinanceCode.UNKNOWN_ERROR, 'Sandbox: injected rate limit, too many requests; retry later.'),
            headers: { 'Retry-After': String(faults.rateLimitRetryAfterSeconds) },
          };
        }
        return undefined;
      },
      work: async (faults) => {
        const raw = req.rawBody ? req.rawBody.toString('utf8') : '';
        const merchant = await this.credentials.binancePayMerchant();
        const authFailure = checkBinanceAuth({
          headers: req.headers,
          body: raw,
          now: arrivedAt,
          windowMs: faults.timestampWindowMs,
          secretFor: (apiKey) => (apiKey === merchant.apiKey ? merchant.secretKey : undefined),
        });
        if (authFailure) throw authFailure;
        const data = await work(parseBinanceBody(raw), faults);
        return { status: 200, text: successEnvelope(data) };
      },
      failure: (err) => {
        if (err instanceof BinanceFail) return { status: err.httpStatus, text: failEnvelope(err.code, err.message) };
        this.logger.error(`merchant API call failed: ${(err as Error)?.stack ?? String(err)}`);
        return { status: 500, text: failEnvelope(BinanceCode.UNKNOWN_ERROR, 'Unknown error, please retry later.') };
      },
      send: (answer) => sendAnswer(res, answer),
      injected: (kind) => this.emulator.countInjection(kind),
    });
  }

  /** A body the parsers refused: authenticate as usual, then answer 400001. */
  handleUnparsableBody(req: RawBodyRequest<SandboxRequest>, res: FastifyReply): Promise<void> {
    return this.handle(req, res, async () => {
      throw new BinanceFail(BinanceCode.INVALID_REQUEST, 'Malformed JSON request body.', 400);
    });
  }
}

/** `/sandbox/binance-pay`: the Binance Pay merchant API, plus fault settings and inspection for tests. */
@Controller('sandbox/binance-pay')
export class BinancePayEmulatorController extends SandboxFaultsController {
  constructor(
    private readonly http: BinancePayMerchantHttp,
    private readonly emulator: BinancePayEmulator,
  ) {
    super(new Logger('BinancePaySandbox'), emulator);
  }

  // --- merchant API (bodies taken from req.rawBody, so the global ValidationPipe stays out) ---

  @Post('binancepay/openapi/order/refund')
  refund(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, (body, faults) => this.emulator.refund(parseRefundRequest(body), faults));
  }

  @Post('binancepay/openapi/order/refund/query')
  queryRefund(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, (body, faults) =>
      this.emulator.queryRefund(parseRefundQuery(body).refundRequestId, faults),
    );
  }

  @Post('binancepay/openapi/v2/order/query')
  queryOrder(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, (body, faults) => this.emulator.queryOrder(parseOrderQuery(body), faults));
  }

  @Post('binancepay/openapi/certificates')
  certificates(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, () => this.emulator.certificates());
  }

  // --- inspection of the emulator's own records ---------------------------------------------

  @Get('refunds')
  listRefunds(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    const prepayId = typeof req.query.prepayId === 'string' ? req.query.prepayId : undefined;
    return control(res, this.logger, async () => ({ body: { data: await this.emulator.inspectRefunds(prepayId) } }));
  }

  @Get('webhooks')
  listWebhooks(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    const prepayId = typeof req.query.prepayId === 'string' ? req.query.prepayId : undefined;
    return control(res, this.logger, async () => ({ body: { data: await this.emulator.inspectWebhooks(prepayId) } }));
  }

  @Get('orders/:prepayId')
  getOrder(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const order = await this.emulator.inspectOrder(String(req.params.prepayId));
      if (!order) throw new SandboxControlError(404, 'order not found');
      return { body: order };
    });
  }
}
