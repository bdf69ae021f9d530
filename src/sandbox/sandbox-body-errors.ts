import { Injectable, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance } from 'fastify';
import { addUnhandledResponder } from '../common/body-errors.js';
import { requestPath } from '../common/request-path.js';
import { BinancePayMerchantHttp } from './binance-pay/binance-pay.emulator.controller.js';
import { BinanceCode, failEnvelope } from './binance-pay/binance-pay.rules.js';
import { COBO_API_PREFIX, CoboApiHttp } from './cobo/cobo.emulator.controller.js';
import { sendError, sendJsonText, type SandboxRequest } from './sandbox-http.js';

const BINANCE_MERCHANT_API = '/sandbox/binance-pay/binancepay/';

/**
 * The body parsers run before any route and hand a body they refuse to the service's
 * problem+json filter. Emulators must answer in their provider's format instead, so this
 * registers a responder (src/common/body-errors.ts) for body errors under `/sandbox`. The
 * Lean emulator answers its own (lean.http.ts), unknown paths included.
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
    if (!adapter || adapter.getType() !== 'fastify') return;
    addUnhandledResponder(adapter.getInstance<FastifyInstance>(), (why, req, res) => {
      const path = requestPath(req.url);
      if (why.kind === 'no_route' || !path.startsWith('/sandbox/') || /^\/sandbox\/lean(-auth)?(\/|$)/.test(path)) return false;
      const binance = path.startsWith(BINANCE_MERCHANT_API);
      const cobo = path.startsWith(COBO_API_PREFIX);
      if (why.kind === 'too_large') {
        if (binance) sendJsonText(res, 400, failEnvelope(BinanceCode.INVALID_REQUEST_TOO_LARGE, 'Request too large.'));
        else if (cobo) void this.cobo.handleTooLarge(res);
        else sendError(res, 413, 'request body too large');
        return true;
      }
      // Malformed JSON, a body cut short: unreadable either way.
      if (binance) void this.binancePay.handleUnparsableBody(req as SandboxRequest, res);
      else if (cobo) void this.cobo.handleUnparsableBody(req as SandboxRequest, res);
      else sendError(res, 400, 'malformed JSON body');
      return true;
    });
  }
}
