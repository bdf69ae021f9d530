import { Injectable } from '@nestjs/common';
import type { PaymentLookup, ProviderOutcome, ProviderResult, RefundCommand, RefundProvider } from '../provider.js';
import { BinanceCall, BinancePayClient } from './binance-pay.client.js';
import {
  classifyOrderResponse,
  classifyQueryResponse,
  classifyRefundResponse,
  orderQueryBody,
  refundQueryBody,
  refundRequestBody,
} from './binance-pay.transformers.js';

const PATHS = {
  refund: '/binancepay/openapi/order/refund',
  refundQuery: '/binancepay/openapi/order/refund/query',
  orderQuery: '/binancepay/openapi/v2/order/query',
} as const;

@Injectable()
export class BinancePayAdapter implements RefundProvider {
  readonly name = 'binance_pay' as const;
  readonly createIsIdempotent = true;
  readonly amountDecimals = 8;
  readonly maxRefundsPerPayment = 10;
  readonly lastRefundTakesRemainder = true;

  constructor(private readonly client: BinancePayClient) {}

  isEnabled(): boolean {
    return this.client.isEnabled();
  }

  async lookupPayment(paymentId: string): Promise<PaymentLookup> {
    const call = await this.client.post(PATHS.orderQuery, orderQueryBody(paymentId));
    if (call.kind === 'no_answer') return { kind: 'unavailable', reason: call.reason };
    return classifyOrderResponse(call.envelope, paymentId);
  }

  async submitRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const call = await this.client.post(PATHS.refund, refundRequestBody(cmd, this.client.webhookUrl()));
    return this.result('create', call, (env) => classifyRefundResponse(env, cmd.amount), true);
  }

  async queryRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const call = await this.client.post(PATHS.refundQuery, refundQueryBody(cmd));
    return this.result('query', call, (env) => classifyQueryResponse(env, cmd.amount), false);
  }

  private result(
    operation: string,
    call: BinanceCall,
    classify: (env: Extract<BinanceCall, { kind: 'envelope' }>['envelope']) => ProviderOutcome,
    isCreate: boolean,
  ): ProviderResult {
    if (call.kind === 'no_answer') {
      let outcome: ProviderOutcome;
      if (call.retryAfterMs !== undefined || call.notSent) {
        // 429 or a refused connection: the provider did nothing; the same call may be repeated.
        outcome = { kind: 'retry', reason: call.reason, retryAfterMs: call.retryAfterMs };
      } else {
        outcome = { kind: 'unknown', reason: isCreate ? `create outcome unknown: ${call.reason}` : call.reason };
      }
      return {
        outcome,
        call: { operation, httpStatus: call.httpStatus, providerCode: null, latencyMs: call.latencyMs, errorMessage: call.reason },
      };
    }
    const env = call.envelope;
    return {
      outcome: classify(env),
      call: {
        operation,
        httpStatus: call.http.status,
        providerCode: env.code ?? null,
        latencyMs: call.http.latencyMs,
        errorMessage: env.status === 'FAIL' ? (env.errorMessage ?? undefined) : undefined,
      },
    };
  }
}
