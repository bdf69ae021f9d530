import { LosslessNumber, stringify } from 'lossless-json';
import { formatAmount, isDecimalString, money } from '../../common/money.js';
import type { ProviderOutcome, ProviderPayment, ProviderUpdate, RefundCommand } from '../provider.js';

/**
 * Pure translation between our model and Binance Pay's merchant API (providers.md §1).
 * No I/O here: every function is unit-tested against hand-written provider payloads.
 */

/** A parsed Binance response envelope; numbers are kept as their exact decimal text. */
export interface BinanceEnvelope {
  status?: string;
  code?: string;
  data?: unknown;
  errorMessage?: string | null;
}

export const BINANCE_REASONS: Record<string, string> = {
  requested_by_customer: 'Requested by customer',
  duplicate: 'Duplicate payment',
  fraudulent: 'Fraudulent payment',
  order_canceled: 'Order canceled',
  other: 'Other',
};

/** Error codes (providers.md §1.4) that say nothing was done and the same call may be repeated. */
const RETRYABLE_CODES = new Set(['400003']); // INVALID_TIMESTAMP: clock skew or a slow hop, nothing processed
/** Codes that leave it open whether the provider processed the call. */
const UNKNOWN_CODES = new Set(['400000']); // UNKNOWN_ERROR: "retry later"
const NOT_FOUND_CODES = new Set(['400202']); // ORDER_NOT_FOUND (the emulator also answers it for unknown refunds)
/**
 * Our credentials, signature or IP are refused: nothing was processed, and it is our
 * configuration, not Binance's verdict on the refund. Retried slowly (and logged loudly by
 * the client) instead of failing every refund until someone fixes the key.
 */
const AUTH_CODES = new Set(['400002', '400004', '400005']);
export const AUTH_RETRY_MS = 60_000;

/**
 * The refund body. `refundAmount` is a JSON number in Binance's docs and SDKs; it is written
 * from the decimal string verbatim (LosslessNumber), never through a float.
 */
export function refundRequestBody(cmd: RefundCommand, webhookUrl: string | undefined): string {
  const prepayId = String(cmd.paymentData.prepayId ?? cmd.paymentId);
  const reason = cmd.description?.trim() ? cmd.description : (BINANCE_REASONS[cmd.reason] ?? cmd.reason);
  return stringify({
    refundRequestId: cmd.providerRequestId,
    prepayId,
    refundAmount: new LosslessNumber(formatAmount(cmd.amount)),
    refundReason: reason.slice(0, 256),
    ...(webhookUrl ? { webhookUrl } : {}),
  }) as string;
}

export function refundQueryBody(cmd: Pick<RefundCommand, 'providerRequestId'>): string {
  return JSON.stringify({ refundRequestId: cmd.providerRequestId });
}

export function orderQueryBody(paymentId: string): string {
  return JSON.stringify({ prepayId: paymentId });
}

function str(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value instanceof LosslessNumber) return value.toString();
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  return undefined;
}

function amount(value: unknown): string | undefined {
  const text = str(value);
  return text !== undefined && isDecimalString(text) ? formatAmount(text) : undefined;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** providerDetails for Binance: `{ remainingAttempts, payerOpenId }` plus what finance needs. */
export function refundDetails(data: Record<string, unknown>): Record<string, unknown> {
  const remaining = str(data.remainingAttempts);
  const details: Record<string, unknown> = {
    remainingAttempts: remaining !== undefined && /^\d+$/.test(remaining) ? Number(remaining) : null,
    payerOpenId: str(data.payerOpenId) ?? null,
  };
  const refundAmount = amount(data.refundAmount);
  if (refundAmount !== undefined) details.providerRefundAmount = refundAmount;
  const refundedAmount = amount(data.refundedAmount);
  if (refundedAmount !== undefined) details.orderRefundedAmount = refundedAmount;
  const commission = amount(data.refundCommission ?? data.refundedCommission);
  if (commission !== undefined) details.refundCommission = commission;
  return details;
}

function updateOf(data: Record<string, unknown>, providerStatus: string | undefined): ProviderUpdate {
  const refundId = str(data.refundId);
  return {
    ...(refundId ? { providerRefundId: refundId } : {}),
    ...(providerStatus ? { providerStatus } : {}),
    details: refundDetails(data),
  };
}

/** Binance refund status → our outcome (refunds-api.md §3 mapping). */
export function outcomeOfRefundStatus(
  refundStatus: string | undefined,
  update: ProviderUpdate,
  ourAmount: string,
): ProviderOutcome {
  switch (refundStatus) {
    case 'REFUND_SUCCESS': {
      const theirs = update.details?.providerRefundAmount;
      if (typeof theirs === 'string' && !money(theirs).eq(ourAmount)) {
        // The remainder rule (or a refund made outside this service) changed the amount:
        // keep the provider's figure visible rather than silently adopting it.
        update.details = { ...update.details, amountMismatch: { ours: formatAmount(ourAmount), theirs } };
      }
      return { kind: 'final', status: 'succeeded', update: { ...update, refundedAmount: formatAmount(ourAmount) } };
    }
    case 'REFUND_FAIL':
    case 'REFUND_REJECTED':
      return {
        kind: 'final',
        status: 'failed',
        // The query says REFUND_FAIL, the webhook REFUND_REJECTED: one failure, one code (filters, retries).
        update: { ...update, failureCode: 'REFUND_FAIL', failureMessage: 'Binance Pay did not complete the refund.' },
      };
    case 'REFUND_PENDING':
      return { kind: 'pending', status: 'processing', update };
    default:
      // Unknown words are never read as success or failure.
      return { kind: 'pending', status: 'processing', update: { ...update, providerStatus: refundStatus ?? update.providerStatus } };
  }
}

function failureOf(env: BinanceEnvelope): ProviderOutcome {
  const code = env.code ?? 'UNKNOWN';
  const message = env.errorMessage ?? undefined;
  if (RETRYABLE_CODES.has(code)) return { kind: 'retry', reason: `Binance ${code}: ${message ?? ''}`.trim() };
  if (AUTH_CODES.has(code)) return { kind: 'retry', reason: `Binance ${code}: ${message ?? ''}`.trim(), retryAfterMs: AUTH_RETRY_MS };
  if (UNKNOWN_CODES.has(code)) return { kind: 'unknown', reason: `Binance ${code}: ${message ?? ''}`.trim() };
  return {
    kind: 'final',
    status: 'failed',
    update: { failureCode: code, failureMessage: message ?? `Binance Pay refused the refund (${code}).` },
  };
}

/** Classifies the answer to POST /order/refund (the HTTP layer already handled transport). */
export function classifyRefundResponse(env: BinanceEnvelope, ourAmount: string): ProviderOutcome {
  if (env.status === 'SUCCESS') {
    const data = record(env.data);
    if (!data || str(data.refundRequestId) === undefined) return { kind: 'unknown', reason: 'SUCCESS without refund data' };
    // The create answer carries no refundStatus in the docs; refunds settle later (poll or webhook).
    const status = str(data.refundStatus);
    return outcomeOfRefundStatus(status ?? 'REFUND_PENDING', updateOf(data, status ?? 'REFUND_PENDING'), ourAmount);
  }
  if (env.status === 'FAIL') return failureOf(env);
  return { kind: 'unknown', reason: 'response is not a Binance envelope' };
}

/** Classifies the answer to POST /order/refund/query. */
export function classifyQueryResponse(env: BinanceEnvelope, ourAmount: string): ProviderOutcome {
  if (env.status === 'SUCCESS') {
    const data = record(env.data);
    if (!data) return { kind: 'unknown', reason: 'SUCCESS without refund data' };
    const status = str(data.refundStatus);
    return outcomeOfRefundStatus(status, updateOf(data, status), ourAmount);
  }
  if (env.status === 'FAIL') {
    if (NOT_FOUND_CODES.has(env.code ?? '')) return { kind: 'not_found' };
    // A failed *query* says nothing about the refund itself: keep asking, never conclude.
    const failure = failureOf(env);
    return failure.kind === 'retry' ? failure : { kind: 'unknown', reason: `query failed: Binance ${env.code}` };
  }
  return { kind: 'unknown', reason: 'response is not a Binance envelope' };
}

const REFUNDABLE_ORDER_STATUSES = new Set(['PAID', 'REFUNDING', 'REFUNDED']);

export type OrderLookup = { kind: 'found'; payment: ProviderPayment } | { kind: 'not_found' } | { kind: 'unavailable'; reason: string };

/** Order query v2 (providers.md §0.4: `data.status` and `data.orderAmount`, no orderStatus). */
export function classifyOrderResponse(env: BinanceEnvelope, paymentId: string): OrderLookup {
  if (env.status === 'SUCCESS') {
    const data = record(env.data);
    const orderAmount = amount(data?.orderAmount);
    const currency = str(data?.currency);
    const status = str(data?.status);
    if (!data || !orderAmount || !currency || !status || money(orderAmount).lte(0)) {
      return { kind: 'unavailable', reason: 'order query answer lacks amount, currency or status' };
    }
    return {
      kind: 'found',
      payment: {
        paymentId,
        amount: orderAmount,
        currency,
        providerStatus: status,
        refundable: REFUNDABLE_ORDER_STATUSES.has(status),
        data: {
          prepayId: str(data.prepayId) ?? paymentId,
          merchantTradeNo: str(data.merchantTradeNo) ?? null,
          binanceMerchantId: str(data.merchantId) ?? null,
        },
      },
    };
  }
  if (env.status === 'FAIL') {
    const code = env.code ?? '';
    // Unknown order, or an id Binance cannot even parse as one: either way, no such payment.
    if (NOT_FOUND_CODES.has(code) || code === '400201' || code === '400301' || code.startsWith('4001')) {
      return { kind: 'not_found' };
    }
    return { kind: 'unavailable', reason: `order query failed: Binance ${code}` };
  }
  return { kind: 'unavailable', reason: 'response is not a Binance envelope' };
}

/** The refund webhook (providers.md §1.3): `data` is a JSON string inside the JSON. */
export interface BinanceRefundNotification {
  refundRequestId: string;
  bizStatus: string;
  data: Record<string, unknown>;
}
