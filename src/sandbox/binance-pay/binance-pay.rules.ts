import { randomInt } from 'node:crypto';
import { LosslessNumber, isLosslessNumber, parse, stringify } from 'lossless-json';
import { Money, formatFixed, money } from '../../common/money.js';
import { verifyBinanceRequest } from '../../providers/binance-pay/binance-pay.signing.js';

/**
 * The Binance Pay merchant API's rules (providers.md §1, §4), as pure functions so they
 * can be tested without a database. The emulator service applies them under row locks.
 */

/** Result codes of providers.md §1.4 that the emulator answers. */
export const BinanceCode = {
  SUCCESS: '000000',
  UNKNOWN_ERROR: '400000',
  INVALID_REQUEST: '400001',
  INVALID_SIGNATURE: '400002',
  INVALID_TIMESTAMP: '400003',
  INVALID_API_KEY_OR_IP: '400004',
  MANDATORY_PARAM_EMPTY_OR_MALFORMED: '400100',
  INVALID_PARAM_WRONG_LENGTH: '400101',
  INVALID_PARAM_WRONG_VALUE: '400102',
  INVALID_REQUEST_TOO_LARGE: '400104',
  ORDER_NOT_FOUND: '400202',
  INVALID_ORDER_STATUS: '400204',
  TOO_MANY_REFUND_ATTEMPTS: '400302',
  INVALID_REFUND_AMOUNT: '400303',
  ACCOUNT_REMAINING_AMOUNT_NOT_ENOUGH: '400304',
} as const;
export type BinanceCode = (typeof BinanceCode)[keyof typeof BinanceCode];

/** A FAIL envelope to answer, with the HTTP status that goes with it. */
export class BinanceFail extends Error {
  constructor(
    readonly code: BinanceCode,
    message: string,
    /** Auth, parse and validation failures are HTTP 400; business rejections are 200. */
    readonly httpStatus = 200,
  ) {
    super(message);
  }
}

export const MAX_REFUND_ATTEMPTS = 10;
/** Binance amounts carry 8 decimals on the wire ("0.01000000"). */
export const AMOUNT_DECIMALS = 8;
/** Fits the numeric(38,8) columns with room to spare. */
const MAX_AMOUNT = money('1e20');

export const REFUNDABLE_ORDER_STATUSES = ['PAID', 'REFUNDING', 'REFUNDED'] as const;
export type OrderStatus =
  | 'INITIAL'
  | 'PENDING'
  | 'PAID'
  | 'CANCELED'
  | 'ERROR'
  | 'REFUNDING'
  | 'REFUNDED'
  | 'FULL_REFUNDED'
  | 'EXPIRED';
export type RefundStatus = 'REFUND_PENDING' | 'REFUND_SUCCESS' | 'REFUND_FAIL';

// ---------------------------------------------------------------------------------------
// Authentication (providers.md §1.1)

export interface BinanceAuthInput {
  headers: Record<string, string | string[] | undefined>;
  /** The exact request body as received (raw bytes decoded as UTF-8). */
  body: string;
  /** When the request arrived, in Unix ms. */
  now: number;
  windowMs: number;
  /** The secret of a known API key, or undefined. */
  secretFor(apiKey: string): string | undefined;
}

function header(headers: BinanceAuthInput['headers'], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Checks the four BinancePay-* headers; returns the failure to answer, or undefined when authentic. */
export function checkBinanceAuth(input: BinanceAuthInput): BinanceFail | undefined {
  const timestamp = header(input.headers, 'BinancePay-Timestamp');
  const nonce = header(input.headers, 'BinancePay-Nonce');
  const apiKey = header(input.headers, 'BinancePay-Certificate-SN');
  const signature = header(input.headers, 'BinancePay-Signature');
  if (!timestamp || !nonce || !apiKey || !signature) {
    return new BinanceFail(BinanceCode.INVALID_SIGNATURE, 'Missing BinancePay-* header.', 400);
  }
  if (!/^[A-Za-z0-9]{32}$/.test(nonce)) {
    return new BinanceFail(BinanceCode.INVALID_SIGNATURE, 'BinancePay-Nonce must be 32 alphanumeric characters.', 400);
  }
  if (!/^\d{1,16}$/.test(timestamp) || Math.abs(input.now - Number(timestamp)) > input.windowMs) {
    return new BinanceFail(BinanceCode.INVALID_TIMESTAMP, 'Timestamp for this request is outside of the recvWindow.', 400);
  }
  const secret = input.secretFor(apiKey);
  if (secret === undefined) {
    return new BinanceFail(BinanceCode.INVALID_API_KEY_OR_IP, 'Invalid API key or IP.', 400);
  }
  if (!verifyBinanceRequest(secret, timestamp, nonce, input.body, signature)) {
    return new BinanceFail(BinanceCode.INVALID_SIGNATURE, 'Signature for this request is not valid.', 400);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Request parsing and validation (providers.md §1.2)

/**
 * Parses the raw body with lossless-json so JSON numbers (refundAmount) keep every digit.
 * An empty body counts as `{}` (the certificates call sends `{}` but may send nothing).
 */
export function parseBinanceBody(raw: string): Record<string, unknown> {
  if (raw.trim() === '') return {};
  let value: unknown;
  try {
    value = parse(raw);
  } catch {
    throw new BinanceFail(BinanceCode.INVALID_REQUEST, 'Malformed JSON request body.', 400);
  }
  // lossless-json gives numbers as LosslessNumber objects, so check for those too.
  if (value === null || typeof value !== 'object' || Array.isArray(value) || isLosslessNumber(value)) {
    throw new BinanceFail(BinanceCode.INVALID_REQUEST, 'The request body must be a JSON object.', 400);
  }
  return value as Record<string, unknown>;
}

function invalid(code: BinanceCode, message: string): BinanceFail {
  return new BinanceFail(code, message, 400);
}

function requiredString(body: Record<string, unknown>, field: string, maxLength: number): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0) {
    throw invalid(BinanceCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, `${field} is mandatory and must be a string.`);
  }
  if (value.length > maxLength) {
    throw invalid(BinanceCode.INVALID_PARAM_WRONG_LENGTH, `${field} must be at most ${maxLength} characters.`);
  }
  return value;
}

function optionalString(body: Record<string, unknown>, field: string, maxLength: number): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    throw invalid(BinanceCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, `${field} must be a string.`);
  }
  if (value.length > maxLength) {
    throw invalid(BinanceCode.INVALID_PARAM_WRONG_LENGTH, `${field} must be at most ${maxLength} characters.`);
  }
  return value;
}

/**
 * A positive amount with at most 8 decimals. Accepts a JSON number (what the docs and SDK
 * send) or a numeric string (Binance's Java side binds both to BigDecimal).
 */
export function parseBinanceAmount(value: unknown, field: string): Money {
  let text: string;
  if (isLosslessNumber(value)) text = value.value;
  else if (typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value)) text = value;
  else throw invalid(BinanceCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, `${field} is mandatory and must be a decimal.`);
  let amount: Money;
  try {
    amount = money(text);
  } catch {
    throw invalid(BinanceCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, `${field} must be a decimal.`);
  }
  if (!amount.isFinite() || amount.lte(0)) {
    throw invalid(BinanceCode.INVALID_PARAM_WRONG_VALUE, `${field} must be greater than 0.`);
  }
  if (amount.decimalPlaces() > AMOUNT_DECIMALS) {
    throw invalid(BinanceCode.INVALID_PARAM_WRONG_VALUE, `${field} must have at most ${AMOUNT_DECIMALS} decimals.`);
  }
  if (amount.gte(MAX_AMOUNT)) throw invalid(BinanceCode.INVALID_PARAM_WRONG_VALUE, `${field} is too large.`);
  return amount;
}

export interface RefundRequest {
  refundRequestId: string;
  prepayId: string;
  refundAmount: Money;
  refundReason?: string;
  webhookUrl?: string;
}

/** Validates a refund call's body; throws BinanceFail 400100/400101/400102 (HTTP 400). */
export function parseRefundRequest(body: Record<string, unknown>): RefundRequest {
  const refundRequestId = requiredString(body, 'refundRequestId', 64);
  const prepayId = requiredString(body, 'prepayId', 19);
  const refundAmount = parseBinanceAmount(body.refundAmount, 'refundAmount');
  const refundReason = optionalString(body, 'refundReason', 256);
  const webhookUrl = optionalString(body, 'webhookUrl', 256);
  if (webhookUrl !== undefined) {
    let ok = /^https?:\/\//i.test(webhookUrl);
    try {
      new URL(webhookUrl);
    } catch {
      ok = false;
    }
    if (!ok) throw invalid(BinanceCode.INVALID_PARAM_WRONG_VALUE, 'webhookUrl must be an http or https URL.');
  }
  return { refundRequestId, prepayId, refundAmount, refundReason, webhookUrl };
}

export function parseRefundQuery(body: Record<string, unknown>): { refundRequestId: string } {
  return { refundRequestId: requiredString(body, 'refundRequestId', 64) };
}

/** Order query v2: `prepayId` wins when both are sent (providers.md §1.2). */
export function parseOrderQuery(body: Record<string, unknown>): { prepayId: string } | { merchantTradeNo: string } {
  if (body.prepayId !== undefined && body.prepayId !== null) return { prepayId: requiredString(body, 'prepayId', 19) };
  if (body.merchantTradeNo !== undefined && body.merchantTradeNo !== null) {
    return { merchantTradeNo: requiredString(body, 'merchantTradeNo', 32) };
  }
  throw invalid(BinanceCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, 'prepayId or merchantTradeNo is mandatory.');
}

// ---------------------------------------------------------------------------------------
// Refund decisions (providers.md §1.4, §1.5)

export interface OrderForRefund {
  status: string;
  orderAmount: Money;
  /** Sum of the order's PENDING and SUCCESS refunds: money that is gone or on its way. */
  reserved: Money;
  remainingAttempts: number;
}

export interface RefundDecision {
  /** What is actually refunded (the whole remainder on the last attempt). */
  amount: Money;
  remainingAttempts: number;
}

/** Decides a new refund on a locked order; throws the business FAIL (HTTP 200) when refused. */
export function decideRefund(order: OrderForRefund, requested: Money, insufficientBalance: boolean): RefundDecision {
  if (!(REFUNDABLE_ORDER_STATUSES as readonly string[]).includes(order.status)) {
    throw new BinanceFail(BinanceCode.INVALID_ORDER_STATUS, `Order status ${order.status} cannot be refunded.`);
  }
  if (order.remainingAttempts <= 0) {
    throw new BinanceFail(BinanceCode.TOO_MANY_REFUND_ATTEMPTS, 'Too many refund attempts for this order.');
  }
  const remainder = order.orderAmount.minus(order.reserved);
  // Binance's rule: the last allowed refund takes everything left, whatever amount was sent.
  const amount = order.remainingAttempts === 1 ? remainder : requested;
  if (amount.lte(0) || amount.gt(remainder)) {
    throw new BinanceFail(BinanceCode.INVALID_REFUND_AMOUNT, 'Refund amount exceeds the refundable amount of the order.');
  }
  if (insufficientBalance) {
    throw new BinanceFail(BinanceCode.ACCOUNT_REMAINING_AMOUNT_NOT_ENOUGH, 'Merchant account balance is not enough.');
  }
  return { amount, remainingAttempts: order.remainingAttempts - 1 };
}

/** Whether a repeated refundRequestId asks for the same refund as the stored one. */
export function isSameRefundRequest(
  stored: { prepayId: string; requestedAmount: Money },
  request: { prepayId: string; refundAmount: Money },
): boolean {
  return stored.prepayId === request.prepayId && stored.requestedAmount.eq(request.refundAmount);
}

/**
 * The order's status from its refunds. Only refundable orders reach here, so the base
 * state is PAID: pending refunds make it REFUNDING, settled ones REFUNDED or FULL_REFUNDED.
 */
export function orderStatusFromRefunds(orderAmount: Money, succeeded: Money, pendingCount: number): OrderStatus {
  if (pendingCount > 0) return 'REFUNDING';
  if (succeeded.gte(orderAmount)) return 'FULL_REFUNDED';
  if (succeeded.gt(0)) return 'REFUNDED';
  return 'PAID';
}

// ---------------------------------------------------------------------------------------
// Wire formats

export function fixed8(value: string | Money): string {
  return formatFixed(value, AMOUNT_DECIMALS);
}

/** Random digits with a non-zero first one, at most `maxFirstDigit` (prepayId has 19, refundId 18). */
export function randomDigits(length: number, maxFirstDigit = 9): string {
  let out = String(randomInt(1, maxFirstDigit + 1));
  while (out.length < length) out += String(randomInt(0, 10));
  return out;
}

export interface RefundSnapshot {
  refundId: string;
  refundRequestId: string;
  prepayId: string;
  orderAmount: string;
  refundedAmount: string;
  refundAmount: string;
  remainingAttempts: number;
  payerOpenId: string;
  duplicate: boolean;
}

/** RefundResult `data` (providers.md §1.2): refundId goes out as a JSON number above 2^53, like Binance's. */
export function refundResultData(r: RefundSnapshot): Record<string, unknown> {
  return {
    refundId: new LosslessNumber(r.refundId),
    refundRequestId: r.refundRequestId,
    prepayId: r.prepayId,
    orderAmount: fixed8(r.orderAmount),
    refundedAmount: fixed8(r.refundedAmount),
    refundAmount: fixed8(r.refundAmount),
    remainingAttempts: r.remainingAttempts,
    payerOpenId: r.payerOpenId,
    duplicateRequest: r.duplicate ? 'Y' : 'N',
  };
}

export function successEnvelope(data: unknown): string {
  return stringify({ status: 'SUCCESS', code: BinanceCode.SUCCESS, data, errorMessage: '' })!;
}

export function failEnvelope(code: BinanceCode, message: string): string {
  return stringify({ status: 'FAIL', code, data: null, errorMessage: message })!;
}

/** The webhook's refundInfo: the RefundResult fields without refundId (providers.md §1.3). */
function refundInfo(r: RefundSnapshot): Record<string, unknown> {
  const { refundId: _refundId, ...rest } = refundResultData(r);
  return rest;
}

export interface RefundWebhookInput {
  prepayId: string;
  merchantTradeNo: string;
  orderAmount: string;
  currency: string;
  transactTime: number;
  openUserId: string;
  refundStatus: 'REFUND_SUCCESS' | 'REFUND_FAIL';
  refund: RefundSnapshot;
}

/**
 * The PAY_REFUND notification body of providers.md §1.3. `data` is itself a JSON string,
 * and bizId is the order's 19-digit prepayId written as a JSON number (above 2^53).
 */
export function buildRefundWebhookBody(w: RefundWebhookInput): string {
  const data = stringify({
    merchantTradeNo: w.merchantTradeNo,
    totalFee: new LosslessNumber(money(w.orderAmount).toFixed()),
    currency: w.currency,
    transactTime: w.transactTime,
    tradeType: 'WEB',
    productType: 'Sandbox',
    productName: 'Sandbox order',
    openUserId: w.openUserId,
    refundInfo: refundInfo(w.refund),
  })!;
  return stringify({
    bizType: 'PAY_REFUND',
    bizId: new LosslessNumber(w.prepayId),
    bizIdStr: w.prepayId,
    // The webhook's word for a failed refund differs from the query's REFUND_FAIL.
    bizStatus: w.refundStatus === 'REFUND_SUCCESS' ? 'REFUND_SUCCESS' : 'REFUND_REJECTED',
    data,
  })!;
}

/** Back-off before each retry (sandbox-short): a failed first delivery is retried 6 times. */
export const WEBHOOK_RETRY_DELAYS_MS = [500, 1_000, 2_000, 4_000, 8_000, 16_000] as const;

/** Delay before the next attempt after `attemptsMade` failed ones, or undefined when out of retries. */
export function webhookRetryDelay(attemptsMade: number): number | undefined {
  return WEBHOOK_RETRY_DELAYS_MS[attemptsMade - 1];
}

/** A delivery counts only on HTTP 200 with a JSON body whose returnCode is SUCCESS. */
export function isWebhookAcknowledged(status: number, body: string): boolean {
  if (status !== 200) return false;
  try {
    const parsed = JSON.parse(body) as { returnCode?: unknown };
    return parsed !== null && typeof parsed === 'object' && parsed.returnCode === 'SUCCESS';
  } catch {
    return false;
  }
}
