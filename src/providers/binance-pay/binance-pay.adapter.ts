import { Injectable } from '@nestjs/common';
import { LosslessNumber } from 'lossless-json';
import { formatAmount, isDecimalString } from '../../common/money.js';
import type {
  PaymentLookup,
  ProviderOutcome,
  ProviderRefundLookup,
  ProviderRefundRecord,
  ProviderResult,
  RefundCommand,
  RefundProvider,
  RefundReference,
} from '../provider.js';
import { lookupWithRetries } from '../provider-http.js';
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

  lookupPayment(paymentId: string): Promise<PaymentLookup> {
    return lookupWithRetries(async () => {
      const call = await this.client.post(PATHS.orderQuery, orderQueryBody(paymentId));
      if (call.kind === 'no_answer') return { kind: 'unavailable', reason: call.reason, transient: true, retryAfterMs: call.retryAfterMs };
      const result = classifyOrderResponse(call.envelope, paymentId);
      // UNKNOWN_ERROR ("retry later") or a SUCCESS without the order: worth asking again.
      return result.kind === 'unavailable' && (call.envelope.code === '400000' || call.envelope.status === 'SUCCESS')
        ? { ...result, transient: true }
        : result;
    });
  }

  async submitRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const call = await this.client.post(PATHS.refund, refundRequestBody(cmd, this.client.webhookUrl()));
    return this.result('create', call, (env) => classifyRefundResponse(env, cmd.amount), true);
  }

  async queryRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const call = await this.client.post(PATHS.refundQuery, refundQueryBody(cmd));
    return this.result('query', call, (env) => classifyQueryResponse(env, cmd.amount), false);
  }

  /**
   * Reconciliation: refund/query by our refundRequestId (Binance has no refund list). Read
   * only; the status is mapped by the same classifier the worker uses.
   */
  async lookupRefund(ref: RefundReference): Promise<ProviderRefundLookup> {
    const call = await this.client.post(PATHS.refundQuery, refundQueryBody(ref));
    if (call.kind === 'no_answer') return { kind: 'error', reason: call.reason, retryAfterMs: call.retryAfterMs };
    const env = call.envelope;
    const data = env.data && typeof env.data === 'object' && !Array.isArray(env.data) ? (env.data as Record<string, unknown>) : {};
    const theirAmount = decimal(data.refundAmount);
    const outcome = classifyQueryResponse(env, theirAmount ?? '0');
    if (outcome.kind === 'not_found') return { kind: 'not_found' };
    if (outcome.kind === 'retry') return { kind: 'error', reason: outcome.reason, retryAfterMs: outcome.retryAfterMs };
    if (outcome.kind === 'unknown') return { kind: 'error', reason: outcome.reason };
    const record: ProviderRefundRecord = {
      providerRefundId: outcome.update.providerRefundId ?? null,
      providerRequestId: typeof data.refundRequestId === 'string' ? data.refundRequestId : ref.providerRequestId,
      paymentId: typeof data.prepayId === 'string' ? data.prepayId : decimal(data.prepayId) ?? null,
      status: outcome.status,
      providerStatus: outcome.update.providerStatus ?? null,
      amount: theirAmount ?? null,
      refundedAmount: outcome.kind === 'final' ? (outcome.status === 'failed' ? '0' : (theirAmount ?? null)) : null,
      // The query answer carries neither the currency nor a creation time.
      currency: null,
      createdAt: null,
    };
    return { kind: 'found', record };
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

function decimal(v: unknown): string | undefined {
  const text = typeof v === 'string' ? v : v instanceof LosslessNumber ? v.toString() : undefined;
  return text !== undefined && isDecimalString(text) ? formatAmount(text) : undefined;
}
