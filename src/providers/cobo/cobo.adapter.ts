import { Injectable } from '@nestjs/common';
import { formatAmount, isDecimalString } from '../../common/money.js';
import type {
  CreateInput,
  PaymentLookup,
  ProviderActionResult,
  ProviderOutcome,
  ProviderRefundLookup,
  ProviderRefundPage,
  ProviderRefundRecord,
  ProviderResult,
  RefundCommand,
  RefundProvider,
  RefundReference,
  RefundWindow,
} from '../provider.js';
import { lookupWithRetries } from '../provider-http.js';
import { CoboCall, CoboClient } from './cobo.client.js';
import {
  COBO_TOKENS,
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

  lookupPayment(paymentId: string): Promise<PaymentLookup> {
    return lookupWithRetries(() => this.lookupPaymentOnce(paymentId));
  }

  private async lookupPaymentOnce(paymentId: string): Promise<PaymentLookup> {
    const call = await this.client.request('GET', `/payments/orders/${encodeURIComponent(paymentId)}`, null);
    if (call.kind === 'no_answer') return { kind: 'unavailable', reason: call.reason, transient: true, retryAfterMs: call.retryAfterMs };
    if (!call.ok) {
      if (call.errorCode === '2028' || call.httpStatus === 404) return { kind: 'not_found' };
      const transient = call.httpStatus >= 500 || call.httpStatus === 429;
      return { kind: 'unavailable', reason: `order lookup failed: Cobo ${call.errorCode ?? call.httpStatus}`, transient, retryAfterMs: call.retryAfterMs };
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

  /**
   * Reconciliation: one page of `GET /payments/refunds` (providers.md §2.1), `limit` 50 and
   * the `after` cursor of the previous page. Cobo's list has no time filter, so the window
   * is not sent; the caller stops walking once it is past the window.
   */
  async listRefunds(_window: RefundWindow, cursor: string | null): Promise<ProviderRefundPage> {
    const query = new URLSearchParams({ limit: String(LIST_PAGE_SIZE) });
    if (cursor) query.set('after', cursor);
    const call = await this.client.request('GET', '/payments/refunds', query);
    if (call.kind === 'no_answer') return { kind: 'error', reason: call.reason, retryAfterMs: call.retryAfterMs };
    if (!call.ok) return listError(call);
    if (!Array.isArray(call.body.data)) return { kind: 'error', reason: 'list answer without data' };
    const pagination = (call.body.pagination ?? {}) as { after?: unknown };
    const after = typeof pagination.after === 'string' && pagination.after !== '' ? pagination.after : null;
    return {
      kind: 'page',
      records: (call.body.data as Record<string, unknown>[]).map(coboRecord),
      // A cursor that does not move would loop forever: end the walk instead.
      nextCursor: after !== null && after !== cursor ? after : null,
    };
  }

  /** Reconciliation: by refund id when known, else the documented `request_id` list filter. Read only. */
  async lookupRefund(ref: RefundReference): Promise<ProviderRefundLookup> {
    if (ref.providerRefundId) {
      const call = await this.client.request('GET', `/payments/refunds/${encodeURIComponent(ref.providerRefundId)}`, null);
      if (call.kind === 'no_answer') return { kind: 'error', reason: call.reason, retryAfterMs: call.retryAfterMs };
      if (call.ok) return { kind: 'found', record: coboRecord(call.body) };
      if (call.errorCode !== '2028' && call.httpStatus !== 404) return listError(call);
      // Unknown by that id: ask by our request id too before concluding absence.
    }
    const call = await this.client.request('GET', '/payments/refunds', new URLSearchParams({ request_id: ref.providerRequestId }));
    if (call.kind === 'no_answer') return { kind: 'error', reason: call.reason, retryAfterMs: call.retryAfterMs };
    if (!call.ok) return listError(call);
    if (!Array.isArray(call.body.data)) return { kind: 'error', reason: 'list answer without data' };
    const mine = (call.body.data as Record<string, unknown>[]).filter((r) => r.request_id === ref.providerRequestId);
    return mine.length ? { kind: 'found', record: coboRecord(mine[0]) } : { kind: 'not_found' };
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
  return { httpStatus: c.httpStatus, errorCode: c.errorCode, message: c.message, retryAfterMs: c.retryAfterMs };
}

function noCall(operation: string) {
  return { operation, httpStatus: null, providerCode: null, latencyMs: 0 };
}

/** Page size of reconciliation walks (Cobo allows 1 to 50). */
const LIST_PAGE_SIZE = 50;

function listError(c: Extract<CoboCall, { kind: 'answer' }>): ProviderRefundPage & { kind: 'error' } {
  const outcome = classifyQueryError(toError(c));
  return {
    kind: 'error',
    reason: outcome.kind === 'retry' || outcome.kind === 'unknown' ? outcome.reason : `Cobo ${c.errorCode ?? c.httpStatus}`,
    ...(outcome.kind === 'retry' ? { retryAfterMs: outcome.retryAfterMs ?? 1_000 } : {}),
  };
}

/** A Cobo Refund object as a reconciliation record, mapped with outcomeOfRefund (contract §3). */
export function coboRecord(r: Record<string, unknown>): ProviderRefundRecord {
  const text = typeof r.amount === 'string' || typeof r.amount === 'number' ? String(r.amount) : undefined;
  const amount = text !== undefined && isDecimalString(text) ? formatAmount(text) : null;
  const outcome = outcomeOfRefund(r, amount ?? '0');
  const status = outcome.kind === 'pending' || outcome.kind === 'final' ? outcome.status : 'processing';
  let refundedAmount: string | null = null;
  if (outcome.kind === 'final') refundedAmount = outcome.status === 'failed' ? '0' : (outcome.update.refundedAmount ?? null);
  // Refund timestamps are Unix seconds (providers.md §2.2).
  const seconds = typeof r.created_timestamp === 'number' ? r.created_timestamp : Number(r.created_timestamp);
  const tokenId = typeof r.token_id === 'string' ? r.token_id : undefined;
  return {
    providerRefundId: typeof r.refund_id === 'string' ? r.refund_id : null,
    providerRequestId: typeof r.request_id === 'string' ? r.request_id : null,
    paymentId: typeof r.order_id === 'string' ? r.order_id : null,
    status,
    providerStatus: typeof r.status === 'string' ? r.status : null,
    amount,
    refundedAmount,
    currency: tokenId ? (COBO_TOKENS[tokenId] ?? tokenId) : null,
    createdAt: Number.isFinite(seconds) && seconds > 0 ? new Date(seconds * 1000) : null,
  };
}
