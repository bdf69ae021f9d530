import { Controller, Delete, Get, Injectable, Logger, Post, Put, Req, Res } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import type { Request, Response } from 'express';
import { SandboxCredentials } from '../sandbox-credentials.js';
import { control, sendError, sendJsonText, sleep } from '../sandbox-http.js';
import { BinancePayFaults, FaultValidationError, chance } from './binance-pay.faults.js';
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
 * controller code) so SandboxBodyErrors can answer through it when express's body parser
 * rejected the body before any route ran.
 */
@Injectable()
export class BinancePayMerchantHttp {
  private readonly logger = new Logger('BinancePaySandbox');

  constructor(
    private readonly emulator: BinancePayEmulator,
    private readonly credentials: SandboxCredentials,
  ) {}

  async handle(req: RawBodyRequest<Request>, res: Response, work: MerchantWork): Promise<void> {
    // Taken before any injected latency: the timestamp window is about when the request came in.
    const arrivedAt = Date.now();
    let faults: BinancePayFaults | undefined;
    let status: number;
    let text: string;
    try {
      faults = await this.emulator.faults();
      await sleep(faults.latencyMs);
      if (chance(faults.errorRate)) {
        // Before anything is done, and never followed by the dropped-connection fault.
        sendJsonText(res, 500, failEnvelope(BinanceCode.UNKNOWN_ERROR, 'Sandbox: injected server error.'));
        return;
      }
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
      status = 200;
      text = successEnvelope(data);
    } catch (err) {
      if (err instanceof BinanceFail) {
        status = err.httpStatus;
        text = failEnvelope(err.code, err.message);
      } else {
        this.logger.error(`merchant API call failed: ${(err as Error)?.stack ?? String(err)}`);
        status = 500;
        text = failEnvelope(BinanceCode.UNKNOWN_ERROR, 'Unknown error, please retry later.');
      }
    }
    if (faults && chance(faults.timeoutAfterCommitRate)) {
      // The work is committed; the caller never learns it and must recover via the query paths.
      await sleep(faults.timeoutAfterCommitDelayMs);
      req.socket.destroy();
      return;
    }
    sendJsonText(res, status, text);
  }

  /** A body express could not parse: authenticate as usual, then answer 400001. */
  handleUnparsableBody(req: RawBodyRequest<Request>, res: Response): Promise<void> {
    return this.handle(req, res, async () => {
      throw new BinanceFail(BinanceCode.INVALID_REQUEST, 'Malformed JSON request body.', 400);
    });
  }
}

/** `/sandbox/binance-pay`: the Binance Pay merchant API, plus fault settings and inspection for tests. */
@Controller('sandbox/binance-pay')
export class BinancePayEmulatorController {
  private readonly logger = new Logger('BinancePaySandbox');

  constructor(
    private readonly http: BinancePayMerchantHttp,
    private readonly emulator: BinancePayEmulator,
  ) {}

  // --- merchant API (bodies taken from req.rawBody, so the global ValidationPipe stays out) ---

  @Post('binancepay/openapi/order/refund')
  refund(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    return this.http.handle(req, res, (body, faults) => this.emulator.refund(parseRefundRequest(body), faults));
  }

  @Post('binancepay/openapi/order/refund/query')
  queryRefund(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    return this.http.handle(req, res, (body, faults) =>
      this.emulator.queryRefund(parseRefundQuery(body).refundRequestId, faults),
    );
  }

  @Post('binancepay/openapi/v2/order/query')
  queryOrder(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    return this.http.handle(req, res, (body, faults) => this.emulator.queryOrder(parseOrderQuery(body), faults));
  }

  @Post('binancepay/openapi/certificates')
  certificates(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    return this.http.handle(req, res, () => this.emulator.certificates());
  }

  // --- fault settings -------------------------------------------------------------------------

  @Get('faults')
  getFaults(@Res() res: Response): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.emulator.faults() }));
  }

  @Put('faults')
  putFaults(@Req() req: Request, @Res() res: Response): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.emulator.patchFaults(req.body) }), [
      FaultValidationError,
    ]);
  }

  @Delete('faults')
  resetFaults(@Res() res: Response): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.emulator.resetFaults() }));
  }

  // --- inspection of the emulator's own records ---------------------------------------------

  @Get('refunds')
  listRefunds(@Req() req: Request, @Res() res: Response): Promise<void> {
    const prepayId = typeof req.query.prepayId === 'string' ? req.query.prepayId : undefined;
    return control(res, this.logger, async () => ({ body: { data: await this.emulator.inspectRefunds(prepayId) } }));
  }

  @Get('webhooks')
  listWebhooks(@Req() req: Request, @Res() res: Response): Promise<void> {
    const prepayId = typeof req.query.prepayId === 'string' ? req.query.prepayId : undefined;
    return control(res, this.logger, async () => ({ body: { data: await this.emulator.inspectWebhooks(prepayId) } }));
  }

  @Get('orders/:prepayId')
  async getOrder(@Req() req: Request, @Res() res: Response): Promise<void> {
    const prepayId = String(req.params.prepayId);
    const order = await this.emulator.inspectOrder(prepayId).catch((err: unknown) => err as Error);
    if (order instanceof Error) {
      this.logger.error(`order inspection failed: ${order.message}`);
      sendError(res, 500, 'internal error');
    } else if (!order) sendError(res, 404, 'order not found');
    else sendJsonText(res, 200, JSON.stringify(order));
  }
}
