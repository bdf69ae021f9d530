import { Injectable } from '@nestjs/common';
import type {
  CreateInput,
  PaymentLookup,
  ProviderActionResult,
  ProviderOutcome,
  ProviderResult,
  RefundCommand,
  RefundProvider,
} from '../provider.js';
import { CoboCall, CoboClient } from './cobo.client.js';
import {
  classifyCreateError,
  classifyQueryError,
  createBody,
  outcomeOfRefund,
  paymentOfOrder,
  validateCoboCreate,
} from './cobo.transformers.js';

@Injectable()
export class CoboAdapter implements RefundProvider {
  readonly name = 'cobo' as const;
  readonly createIsIdempotent = true;
  readonly amountDecimals = 2;

  constructor(private readonly client: CoboClient) {}

  isEnabled(): boolean {
    return this.client.isEnabled();
  }

  validateCreate(input: CreateInput) {
    return validateCoboCreate(input);
  }

  checkPayment(input: CreateInput, paymentData: Record<string, unknown>): string | undefined {
    const tokenId = (input.options as { tokenId?: string }).tokenId;
    if (typeof paymentData.tokenId === 'string' && tokenId !== paymentData.tokenId) {
      return `The payment was made in ${paymentData.tokenId}; refund it in the same token.`;
    }
    return undefined;
  }

  async lookupPayment(paymentId: string): Promise<PaymentLookup> {
    const call = await this.client.request('GET', `/payments/orders/${encodeURIComponent(paymentId)}`, null);
    if (call.kind === 'no_answer') return { kind: 'unavailable', reason: call.reason };
    if (!call.ok) {
      if (call.errorCode === '2028' || call.httpStatus === 404) return { kind: 'not_found' };
      return { kind: 'unavailable', reason: `order lookup failed: Cobo ${call.errorCode ?? call.httpStatus}` };
    }
    const payment = paymentOfOrder(call.body, paymentId);
    return payment ? { kind: 'found', payment } : { kind: 'unavailable', reason: 'order answer lacks token, amount or status' };
  }

  async submitRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const call = await this.client.request('POST', '/payments/refunds', null, createBody(cmd));
    return this.result('create', call, (c) => (c.ok ? outcomeOfRefund(c.body, cmd.amount) : classifyCreateError(toError(c))), true);
  }

  /** By refund id once known; before that, the documented recovery path: list by request_id. */
  async queryRefund(cmd: RefundCommand): Promise<ProviderResult> {
    if (cmd.providerRefundId) {
      const call = await this.client.request('GET', `/payments/refunds/${encodeURIComponent(cmd.providerRefundId)}`, null);
      return this.result('query', call, (c) => (c.ok ? outcomeOfRefund(c.body, cmd.amount) : classifyQueryError(toError(c))), false);
    }
    const call = await this.client.request('GET', '/payments/refunds', new URLSearchParams({ request_id: cmd.providerRequestId }));
    return this.result(
      'query',
      call,
      (c) => {
        if (!c.ok) return classifyQueryError(toError(c));
        const data = Array.isArray(c.body.data) ? (c.body.data as Record<string, unknown>[]) : undefined;
        if (!data) return { kind: 'unknown', reason: 'list answer without data' };
        const mine = data.filter((r) => r.request_id === cmd.providerRequestId);
        if (mine.length === 0) return { kind: 'not_found' };
        return outcomeOfRefund(mine[0], cmd.amount);
      },
      false,
    );
  }

  async updateRefundAddress(cmd: RefundCommand, toAddress: string): Promise<ProviderActionResult> {
    if (!cmd.providerRefundId) return { outcome: 'refused', message: 'refund not known at Cobo yet', call: noCall('update') };
    const call = await this.client.request(
      'PUT',
      `/payments/refunds/${encodeURIComponent(cmd.providerRefundId)}`,
      null,
      JSON.stringify({ to_address: toAddress }),
    );
    return this.action('update', call, cmd.amount);
  }

  async cancelRefund(cmd: RefundCommand): Promise<ProviderActionResult> {
    if (!cmd.providerRefundId) return { outcome: 'done', message: 'nothing at Cobo to cancel', call: noCall('cancel') };
    const call = await this.client.request('PUT', `/payments/refunds/${encodeURIComponent(cmd.providerRefundId)}/cancel`, null, '{}');
    return this.action('cancel', call, cmd.amount);
  }

  private action(operation: string, call: CoboCall, amount: string): ProviderActionResult {
    const record = {
      operation,
      httpStatus: call.httpStatus,
      providerCode: call.kind === 'answer' ? (call.errorCode ?? null) : null,
      latencyMs: call.latencyMs,
      errorMessage: call.kind === 'answer' ? call.message : call.reason,
    };
    if (call.kind === 'no_answer' || call.httpStatus >= 500 || call.httpStatus === 429) {
      return { outcome: 'unknown', message: call.kind === 'no_answer' ? call.reason : `HTTP ${call.httpStatus}`, call: record };
    }
    if (!call.ok) return { outcome: 'refused', message: call.message ?? `Cobo ${call.errorCode}`, call: record };
    const outcome = outcomeOfRefund(call.body, amount);
    return { outcome: 'done', update: 'update' in outcome ? outcome.update : undefined, call: record };
  }

  private result(
    operation: string,
    call: CoboCall,
    classify: (c: Extract<CoboCall, { kind: 'answer' }>) => ProviderOutcome,
    isCreate: boolean,
  ): ProviderResult {
    if (call.kind === 'no_answer') {
      const outcome: ProviderOutcome =
        call.retryAfterMs !== undefined || call.notSent
          ? { kind: 'retry', reason: call.reason, retryAfterMs: call.retryAfterMs }
          : { kind: 'unknown', reason: isCreate ? `create outcome unknown: ${call.reason}` : call.reason };
      return { outcome, call: { operation, httpStatus: call.httpStatus, providerCode: null, latencyMs: call.latencyMs, errorMessage: call.reason } };
    }
    return {
      outcome: classify(call),
      call: { operation, httpStatus: call.httpStatus, providerCode: call.errorCode ?? null, latencyMs: call.latencyMs, errorMessage: call.message },
    };
  }
}

function toError(c: Extract<CoboCall, { kind: 'answer' }>) {
  return { httpStatus: c.httpStatus, errorCode: c.errorCode, message: c.message };
}

function noCall(operation: string) {
  return { operation, httpStatus: null, providerCode: null, latencyMs: 0 };
}
