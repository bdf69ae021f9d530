import { Injectable, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { NextFunction, Request, Response } from 'express';
import { BinancePayMerchantHttp } from './binance-pay/binance-pay.emulator.controller.js';
import { BinanceCode, failEnvelope } from './binance-pay/binance-pay.rules.js';
import { COBO_API_PREFIX, CoboApiHttp } from './cobo/cobo.emulator.controller.js';
import { sendError, sendJsonText } from './sandbox-http.js';

const BINANCE_MERCHANT_API = '/sandbox/binance-pay/binancepay/';

/**
 * Express's JSON body parser runs before any route and hands a malformed body to the
 * service's problem+json filter. Emulators must answer in their provider's format instead,
 * so this adds an express error handler for `/sandbox` that catches body-parser errors.
 * It is registered in onModuleInit, which Nest runs after the routes are mounted and
 * before its own error handler, so it sees exactly the errors no route handled.
 */
@Injectable()
export class SandboxBodyErrors implements OnModuleInit {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly binancePay: BinancePayMerchantHttp,
    private readonly cobo: CoboApiHttp,
  ) {}

  onModuleInit(): void {
    const adapter = this.adapterHost.httpAdapter;
    if (!adapter || adapter.getType() !== 'express') return;
    adapter.use('/sandbox', (err: unknown, req: Request, res: Response, next: NextFunction) => {
      // The Lean emulator answers its own body errors in Lean's format (lean.http.ts).
      if (/^\/sandbox\/lean(-auth)?(\/|\?|$)/.test(req.originalUrl)) return next(err);
      const type = (err as { type?: unknown })?.type;
      if (typeof type !== 'string' || res.headersSent) return next(err);
      const binance = req.originalUrl.startsWith(BINANCE_MERCHANT_API);
      const cobo = req.originalUrl.startsWith(COBO_API_PREFIX);
      if (type === 'entity.too.large') {
        if (binance) sendJsonText(res, 400, failEnvelope(BinanceCode.INVALID_REQUEST_TOO_LARGE, 'Request too large.'));
        else if (cobo) void this.cobo.handleTooLarge(res);
        else sendError(res, 413, 'request body too large');
        return;
      }
      // entity.parse.failed, encoding/charset errors, aborted bodies: all unreadable JSON.
      if (binance) void this.binancePay.handleUnparsableBody(req, res);
      else if (cobo) void this.cobo.handleUnparsableBody(req, res);
      else sendError(res, 400, 'malformed JSON body');
    });
  }
}
