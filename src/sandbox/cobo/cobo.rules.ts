import { randomBytes, randomUUID } from 'node:crypto';
import { Money, formatAmount, money } from '../../common/money.js';
import { verifyCoboRequest } from '../../providers/cobo/cobo.signing.js';

/**
 * The Cobo Payments (WaaS 2.0) API's rules (providers.md §2, §4), as pure functions so
 * they can be tested without a database. The emulator service applies them under row locks.
 */

/** WaaS 2.0 error codes (providers.md §2.6) that the emulator answers. */
export const CoboCode = {
  INTERNAL: 2000,
  UNSUPPORTED_METHOD: 2002,
  MISSING_PARAMETER: 2003,
  BAD_PARAMETER: 2006,
  MISSING_HANDLER: 2021,
  MISSING_HEADERS: 2022,
  SIGNATURE_FAILED: 2023,
  API_KEY_FAILED: 2024,
  NOT_FOUND: 2028,
  TOO_MANY_REQUESTS: 2026,
  INVALID_STATUS: 2029,
  DUPLICATE_KEY: 2040,
  // Payments-specific codes are [UNKNOWN] (providers.md §2.6): 12002 is the emulator's own
  // choice for "insufficient balance", outside the documented 2xxx range on purpose.
  INSUFFICIENT_BALANCE: 12002,
} as const;
export type CoboCode = (typeof CoboCode)[keyof typeof CoboCode];

/** An error answer `{error_code, error_message, error_id}` with its HTTP status. */
export class CoboError extends Error {
  constructor(
    readonly httpStatus: number,
    readonly code: CoboCode,
    message: string,
  ) {
    super(message);
  }
}

const badParam = (message: string) => new CoboError(400, CoboCode.BAD_PARAMETER, message);
const missingParam = (field: string) => new CoboError(400, CoboCode.MISSING_PARAMETER, `Missing required parameter: ${field}.`);

export function errorBody(code: CoboCode, message: string): string {
  return JSON.stringify({ error_code: code, error_message: message, error_id: randomUUID().replaceAll('-', '') });
}

// ---------------------------------------------------------------------------------------
// Tokens (providers.md §2.2)

export const COBO_TOKENS: Readonly<Record<string, 'USDT' | 'USDC'>> = Object.freeze({
  ETH_USDC: 'USDC',
  ARBITRUM_USDCOIN: 'USDC',
  SOL_USDC: 'USDC',
  BASE_USDC: 'USDC',
  MATIC_USDC2: 'USDC',
  BSC_USDC: 'USDC',
  TRON_USDT: 'USDT',
  ETH_USDT: 'USDT',
  ARBITRUM_USDT: 'USDT',
  SOL_USDT: 'USDT',
  BASE_USDT: 'USDT',
  MATIC_USDT: 'USDT',
  BSC_USDT: 'USDT',
});

/** Default token of a seeded pay-in order per currency. */
export const DEFAULT_TOKEN: Readonly<Record<'USDT' | 'USDC', string>> = { USDT: 'TRON_USDT', USDC: 'ETH_USDC' };

export function isCoboToken(value: unknown): value is string {
  return typeof value === 'string' && Object.hasOwn(COBO_TOKENS, value);
}

/** `chain_id` is the token id's prefix: ETH_USDT → ETH. */
export function chainOf(tokenId: string): string {
  const cut = tokenId.indexOf('_');
  return cut < 0 ? tokenId : tokenId.slice(0, cut);
}

// ---------------------------------------------------------------------------------------
// Authentication (providers.md §2.4)

export interface CoboAuthInput {
  method: string;
  /** The full pathname as received (with the /sandbox/cobo prefix), undecoded. */
  path: string;
  /** The raw query string as received, without '?'. */
  query: string;
  /** The raw body as received, or ''. */
  body: string;
  headers: Record<string, string | string[] | undefined>;
  /** When the request arrived, in Unix ms. */
  now: number;
  windowMs: number;
  /** The one registered API key (hex public key). */
  registeredKey: string;
}

function header(headers: CoboAuthInput['headers'], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Returns the 401 to answer, or undefined when the call is authentic. */
export function checkCoboAuth(input: CoboAuthInput): CoboError | undefined {
  const apiKey = header(input.headers, 'Biz-Api-Key');
  const nonce = header(input.headers, 'Biz-Api-Nonce');
  const signature = header(input.headers, 'Biz-Api-Signature');
  if (!apiKey || !nonce || !signature) {
    return new CoboError(401, CoboCode.MISSING_HEADERS, 'Missing required headers: Biz-Api-Key, Biz-Api-Nonce, Biz-Api-Signature.');
  }
  if (apiKey.toLowerCase() !== input.registeredKey.toLowerCase()) {
    return new CoboError(401, CoboCode.API_KEY_FAILED, 'API key authentication failed.');
  }
  if (!/^\d{1,16}$/.test(nonce) || Math.abs(input.now - Number(nonce)) > input.windowMs) {
    return new CoboError(401, CoboCode.SIGNATURE_FAILED, 'Biz-Api-Nonce is not a timestamp within the allowed window.');
  }
  if (!verifyCoboRequest(apiKey, input.method, input.path, nonce, input.query, input.body, signature)) {
    return new CoboError(401, CoboCode.SIGNATURE_FAILED, 'Signature validation failed.');
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Request parsing and validation (providers.md §2.1, §2.2)

/** The JSON body as an object; an empty body counts as `{}`. */
export function parseCoboBody(raw: string): Record<string, unknown> {
  if (raw.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw badParam('Malformed JSON request body.');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw badParam('The request body must be a JSON object.');
  }
  return value as Record<string, unknown>;
}

/** Refund amounts: a decimal string, positive, at most 2 decimals (providers.md §2.2). */
const AMOUNT_RE = /^(0|[1-9]\d{0,19})(\.\d{1,2})?$/;

function rejectUnknownFields(body: Record<string, unknown>, known: readonly string[]): void {
  // Strict on purpose: a misspelt field (orderId, amount) is a client bug worth surfacing.
  const unknown = Object.keys(body).find((key) => !known.includes(key));
  if (unknown !== undefined) throw badParam(`Unknown parameter: ${unknown}.`);
}

/** null counts as absent, like the SDKs' optional fields. */
function present(body: Record<string, unknown>, field: string): boolean {
  return body[field] !== undefined && body[field] !== null;
}

function stringField(body: Record<string, unknown>, field: string, maxLength: number, required: true): string;
function stringField(body: Record<string, unknown>, field: string, maxLength: number, required: false): string | undefined;
function stringField(body: Record<string, unknown>, field: string, maxLength: number, required: boolean): string | undefined {
  if (!present(body, field)) {
    if (required) throw missingParam(field);
    return undefined;
  }
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength || value.trim() !== value) {
    throw badParam(`${field} must be a non-empty string of at most ${maxLength} characters without surrounding spaces.`);
  }
  return value;
}

function amountField(body: Record<string, unknown>, field: string, required: boolean): Money | undefined {
  if (!present(body, field)) {
    if (required) throw missingParam(field);
    return undefined;
  }
  const value = body[field];
  if (typeof value !== 'string' || !AMOUNT_RE.test(value) || money(value).lte(0)) {
    throw badParam(`${field} must be a positive decimal string with up to two decimal places.`);
  }
  return money(value);
}

export type RefundType = 'Merchant' | 'Psp';

export interface CreateRefundRequest {
  requestId: string;
  /** As sent (echoed back as `amount`). */
  payableAmount: string;
  tokenId: string;
  refundType: RefundType;
  merchantId?: string;
  toAddress?: string;
  orderId?: string;
  chargeMerchantFee: boolean;
  merchantFeeAmount?: string;
  merchantFeeTokenId?: string;
}

const CREATE_FIELDS = [
  'request_id',
  'payable_amount',
  'token_id',
  'refund_type',
  'merchant_id',
  'to_address',
  'order_id',
  'charge_merchant_fee',
  'merchant_fee_amount',
  'merchant_fee_token_id',
] as const;

/** Validates CreateRefundRequest; throws CoboError 2003 (missing) or 2006 (bad value). */
export function parseCreateRefund(body: Record<string, unknown>): CreateRefundRequest {
  rejectUnknownFields(body, CREATE_FIELDS);
  // Length limits are [INF]: Cobo documents none.
  const requestId = stringField(body, 'request_id', 128, true);
  const payable = amountField(body, 'payable_amount', true)!;
  if (!present(body, 'token_id')) throw missingParam('token_id');
  if (!isCoboToken(body.token_id)) throw badParam(`token_id must be one of ${Object.keys(COBO_TOKENS).join(', ')}.`);
  const tokenId = body.token_id;
  if (!present(body, 'refund_type')) throw missingParam('refund_type');
  if (body.refund_type !== 'Merchant' && body.refund_type !== 'Psp') throw badParam('refund_type must be Merchant or Psp.');
  const refundType: RefundType = body.refund_type;
  const merchantId = stringField(body, 'merchant_id', 64, false);
  const orderId = stringField(body, 'order_id', 128, false);
  const toAddress = stringField(body, 'to_address', 256, false);
  if (toAddress !== undefined && /\s/.test(toAddress)) throw badParam('to_address must not contain spaces.');

  if (present(body, 'charge_merchant_fee') && typeof body.charge_merchant_fee !== 'boolean') {
    throw badParam('charge_merchant_fee must be a boolean.');
  }
  const chargeMerchantFee = body.charge_merchant_fee === true;
  let merchantFeeAmount: string | undefined;
  let merchantFeeTokenId: string | undefined;
  if (chargeMerchantFee) {
    if (refundType !== 'Merchant') throw badParam('charge_merchant_fee is only valid when refund_type is Merchant.');
    const fee = amountField(body, 'merchant_fee_amount', true)!;
    if (fee.gte(payable)) throw badParam('merchant_fee_amount must be less than payable_amount.');
    if (!present(body, 'merchant_fee_token_id')) throw missingParam('merchant_fee_token_id');
    if (body.merchant_fee_token_id !== tokenId) throw badParam('merchant_fee_token_id must be the same as token_id.');
    merchantFeeAmount = body.merchant_fee_amount as string;
    merchantFeeTokenId = tokenId;
  } else if (present(body, 'merchant_fee_amount') || present(body, 'merchant_fee_token_id')) {
    throw badParam('merchant_fee_amount and merchant_fee_token_id are only valid when charge_merchant_fee is true.');
  }
  return {
    requestId,
    payableAmount: body.payable_amount as string,
    tokenId,
    refundType,
    merchantId,
    toAddress,
    orderId,
    chargeMerchantFee,
    merchantFeeAmount,
    merchantFeeTokenId,
  };
}

/** `PUT /payments/refunds/{refund_id}`: `{to_address}`. */
export function parseUpdateRefund(body: Record<string, unknown>): { toAddress: string } {
  rejectUnknownFields(body, ['to_address']);
  const toAddress = stringField(body, 'to_address', 256, true);
  if (/\s/.test(toAddress)) throw badParam('to_address must not contain spaces.');
  return { toAddress };
}

export const REFUND_STATUSES = [
  'AddressPending',
  'AddressSubmitted',
  'Pending',
  'Processing',
  'Completed',
  'PartiallyCompleted',
  'Failed',
  'PendingConfirmation',
] as const;
export type RefundStatus = (typeof REFUND_STATUSES)[number];

export interface ListRefundsQuery {
  requestId?: string;
  merchantId?: string;
  statuses?: RefundStatus[];
  limit: number;
  /** Decoded cursors: the emulator's sequence numbers. */
  before?: string;
  after?: string;
}

export const LIST_DEFAULT_LIMIT = 10;
export const LIST_MAX_LIMIT = 50;

/** Cursors are opaque to clients; inside they name a refund's sequence number. */
export function encodeCursor(seq: string): string {
  return Buffer.from(`cobo-refund:${seq}`, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string, field: string): string {
  const text = /^[A-Za-z0-9_-]{1,64}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const match = /^cobo-refund:([1-9]\d{0,17})$/.exec(text);
  if (!match) throw badParam(`${field} is not a valid cursor.`);
  return match[1]!;
}

/** `GET /payments/refunds` query parameters; unknown ones are ignored. */
export function parseListRefunds(query: URLSearchParams): ListRefundsQuery {
  const one = (name: string): string | undefined => {
    const value = query.get(name);
    return value === null || value === '' ? undefined : value;
  };
  const limitText = one('limit');
  let limit = LIST_DEFAULT_LIMIT;
  if (limitText !== undefined) {
    if (!/^\d{1,3}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > LIST_MAX_LIMIT) {
      throw badParam(`limit must be an integer from 1 to ${LIST_MAX_LIMIT}.`);
    }
    limit = Number(limitText);
  }
  let statuses: RefundStatus[] | undefined;
  const statusText = query.getAll('statuses').filter((s) => s !== '').join(',');
  if (statusText !== '') {
    statuses = statusText.split(',').map((s) => s.trim()) as RefundStatus[];
    const wrong = statuses.find((s) => !(REFUND_STATUSES as readonly string[]).includes(s));
    if (wrong !== undefined) throw badParam(`statuses: unknown status "${wrong}".`);
  }
  const beforeText = one('before');
  const afterText = one('after');
  if (beforeText !== undefined && afterText !== undefined) throw badParam('Use either before or after, not both.');
  return {
    requestId: one('request_id'),
    merchantId: one('merchant_id'),
    statuses,
    limit,
    before: beforeText === undefined ? undefined : decodeCursor(beforeText, 'before'),
    after: afterText === undefined ? undefined : decodeCursor(afterText, 'after'),
  };
}

// ---------------------------------------------------------------------------------------
// Refund lifecycle (providers.md §2.3)

export type RefundOutcome = 'Completed' | 'PartiallyCompleted' | 'Failed';

/** Transaction statuses the emulator uses (a subset of PaymentTransaction's). */
export type TxStatus = 'Submitted' | 'Confirming' | 'Completed' | 'Failed';

/** A PaymentTransaction as stored; timestamps in ms (unlike the refund's seconds). */
export interface RefundTx {
  tx_id: string;
  tx_hash: string;
  from_address: string;
  to_address: string;
  amount: string;
  token_id: string;
  status: TxStatus;
  failed_reason?: string;
  created_timestamp: number;
  updated_timestamp: number;
}

/**
 * Deterministic outcomes for tests: an address starting with FAIL fails, one starting
 * with PARTIAL partially completes. Otherwise the fault rates decide.
 */
export function decideOutcome(
  toAddress: string,
  rates: { failRate: number; partialRate: number },
  random: () => number = Math.random,
): RefundOutcome {
  if (toAddress.startsWith('FAIL')) return 'Failed';
  if (toAddress.startsWith('PARTIAL')) return 'PartiallyCompleted';
  if (rates.failRate > 0 && random() < rates.failRate) return 'Failed';
  if (rates.partialRate > 0 && random() < rates.partialRate) return 'PartiallyCompleted';
  return 'Completed';
}

/**
 * The completed and failed parts of a partially completed refund: the completed share is
 * rounded down to 2 decimals and both parts are at least 0.01. Undefined when the amount
 * is too small to split (below 0.02), which then simply fails.
 */
export function splitPartial(amount: string, ratio: number): { completed: string; failed: string } | undefined {
  const total = money(amount);
  const cent = money('0.01');
  if (total.lt(cent.times(2))) return undefined;
  let completed = total.times(ratio).toDecimalPlaces(2, Money.ROUND_DOWN);
  if (completed.lt(cent)) completed = cent;
  if (completed.gt(total.minus(cent))) completed = total.minus(cent);
  return { completed: formatAmount(completed), failed: formatAmount(total.minus(completed)) };
}

export interface LifecycleState {
  status: RefundStatus;
  outcome: RefundOutcome | null;
  amount: string;
  tokenId: string;
  toAddress: string | null;
  transactions: RefundTx[];
  /** The completed amount once final (Completed: all; PartiallyCompleted: the completed part; Failed: 0). */
  completedAmount: string | null;
  failedReason: string | null;
  /** When the next step is due (ms), or null when nothing is scheduled. */
  dueAt: number | null;
  /** When processing ends (ms), set when it starts. */
  settleAt: number | null;
  /** Last status change (ms). */
  updatedAt: number;
}

export interface LifecycleOptions {
  settleAfterMs: number;
  partialCompletedRatio: number;
  decideOutcome: (toAddress: string) => RefundOutcome;
  /** The sandbox hot wallet of the token's chain. */
  fromAddress: (tokenId: string) => string;
}

export const FAILED_TX_REASON = 'Sandbox: the refund transaction failed on chain.';

function newTx(state: LifecycleState, amount: string, at: number, from: string): RefundTx {
  return {
    tx_id: randomUUID(),
    tx_hash: randomTxHash(state.tokenId),
    from_address: from,
    to_address: state.toAddress!,
    amount,
    token_id: state.tokenId,
    status: 'Submitted',
    created_timestamp: at,
    updated_timestamp: at,
  };
}

/**
 * Runs every step due by `now`, each at its own due time (so a refund read long after it
 * was due catches up in one go with a consistent timeline). Returns the new state and a
 * snapshot after each status change, oldest first, one webhook each.
 */
export function advanceLifecycle(
  start: LifecycleState,
  now: number,
  opts: LifecycleOptions,
): { state: LifecycleState; changes: LifecycleState[] } {
  let state = start;
  const changes: LifecycleState[] = [];
  // At most three steps (start, confirm, finish); the bound guards against a bad state.
  for (let step = 0; step < 3 && state.dueAt !== null && state.dueAt <= now; step++) {
    const at = state.dueAt;
    if (state.status === 'Pending') {
      if (state.toAddress === null) return { state: { ...state, dueAt: null }, changes }; // cannot happen: Pending has an address
      let outcome = opts.decideOutcome(state.toAddress);
      const from = opts.fromAddress(state.tokenId);
      let transactions: RefundTx[];
      const split = outcome === 'PartiallyCompleted' ? splitPartial(state.amount, opts.partialCompletedRatio) : undefined;
      if (outcome === 'PartiallyCompleted' && !split) outcome = 'Failed';
      if (split) transactions = [newTx(state, split.completed, at, from), newTx(state, split.failed, at, from)];
      else transactions = [newTx(state, state.amount, at, from)];
      const settleAt = at + opts.settleAfterMs;
      state = {
        ...state,
        status: 'Processing',
        outcome,
        transactions,
        settleAt,
        dueAt: at + Math.floor(opts.settleAfterMs / 2),
        updatedAt: at,
      };
      changes.push(state);
    } else if (state.status === 'Processing' && state.transactions.some((tx) => tx.status === 'Submitted')) {
      state = {
        ...state,
        transactions: state.transactions.map((tx) => ({ ...tx, status: 'Confirming', updated_timestamp: at })),
        dueAt: state.settleAt ?? at,
      };
    } else if (state.status === 'Processing') {
      state = finish(state, at);
      changes.push(state);
    } else {
      state = { ...state, dueAt: null };
    }
  }
  return { state, changes };
}

function finish(state: LifecycleState, at: number): LifecycleState {
  const outcome = state.outcome ?? 'Completed';
  const transactions = state.transactions.map((tx, i): RefundTx => {
    // Partial: the first transaction (the completed share) succeeds, the second fails.
    const ok = outcome === 'Completed' || (outcome === 'PartiallyCompleted' && i === 0);
    return ok
      ? { ...tx, status: 'Completed', updated_timestamp: at }
      : { ...tx, status: 'Failed', failed_reason: FAILED_TX_REASON, updated_timestamp: at };
  });
  const completed = transactions
    .filter((tx) => tx.status === 'Completed')
    .reduce((sum, tx) => sum.plus(tx.amount), money('0'));
  return {
    ...state,
    status: outcome,
    transactions,
    completedAmount: formatAmount(completed),
    failedReason: outcome === 'Failed' ? FAILED_TX_REASON : state.failedReason,
    dueAt: null,
    updatedAt: at,
  };
}

/** What a final or canceled refund gives back to the order's refundable amount. */
export function releasedAmount(status: RefundStatus, amount: string, completedAmount: string | null): Money {
  if (status === 'Failed') return money(amount);
  if (status === 'PartiallyCompleted') return money(amount).minus(completedAmount ?? '0');
  return money('0');
}

/** Update and cancel are allowed only before processing starts. */
export function isBeforeProcessing(status: string): boolean {
  return status === 'Pending' || status === 'PendingConfirmation';
}

// The cancel status is [UNKNOWN] (providers.md §2.3: not in the enum). A canceled refund
// ends Failed with this reason: Failed is final, releases the amount, and adapters already
// handle it, where an invented "Canceled" status would be mapped as unknown.
export const CANCELED_REASON = 'Canceled by merchant';

// ---------------------------------------------------------------------------------------
// Wire formats

/** Sandbox hot wallet per chain, the `from_address` of refund transactions. */
const HOT_WALLETS: Readonly<Record<string, string>> = {
  TRON: 'TSandboxCoboHotWa11etXXXXXXXXXXXXX',
  SOL: 'SandboxCoboHotWa11etSo1anaXXXXXXXXXXXXXXXXX',
};
const EVM_HOT_WALLET = '0x5a4dbccb0b0c0b0a00000000000000000000c0b0';

export function hotWallet(tokenId: string): string {
  return HOT_WALLETS[chainOf(tokenId)] ?? EVM_HOT_WALLET;
}

function randomTxHash(tokenId: string): string {
  const hex = randomBytes(32).toString('hex');
  const chain = chainOf(tokenId);
  return chain === 'TRON' || chain === 'SOL' ? hex : `0x${hex}`;
}

/** Every field of a refund the API shows. */
export interface RefundRecord {
  refund_id: string;
  request_id: string;
  order_id: string | null;
  merchant_id: string | null;
  token_id: string;
  amount: string;
  to_address: string | null;
  status: RefundStatus;
  refund_type: RefundType;
  charge_merchant_fee: boolean;
  merchant_fee_amount: string | null;
  merchant_fee_token_id: string | null;
  commission_fee: string;
  failed_reason: string | null;
  initiator: string;
  transactions: RefundTx[];
  created_at: Date;
  updated_at: Date;
}

const seconds = (d: Date) => Math.floor(d.getTime() / 1000);

function txView(tx: RefundTx): Record<string, unknown> {
  return {
    tx_id: tx.tx_id,
    tx_hash: tx.tx_hash,
    from_address: tx.from_address,
    to_address: tx.to_address,
    amount: tx.amount,
    token_id: tx.token_id,
    status: tx.status,
    ...(tx.failed_reason ? { failed_reason: tx.failed_reason } : {}),
    created_timestamp: tx.created_timestamp,
    updated_timestamp: tx.updated_timestamp,
  };
}

/**
 * The Refund object (providers.md §2.2). Optional fields are left out when unset;
 * to_address is required by the SDK models, so it is "" until an address is known.
 */
export function refundView(r: RefundRecord): Record<string, unknown> {
  return {
    refund_id: r.refund_id,
    request_id: r.request_id,
    ...(r.order_id !== null ? { order_id: r.order_id } : {}),
    ...(r.merchant_id !== null ? { merchant_id: r.merchant_id } : {}),
    token_id: r.token_id,
    chain_id: chainOf(r.token_id),
    amount: r.amount,
    to_address: r.to_address ?? '',
    status: r.status,
    refund_type: r.refund_type,
    charge_merchant_fee: r.charge_merchant_fee,
    ...(r.merchant_fee_amount !== null ? { merchant_fee_amount: r.merchant_fee_amount } : {}),
    ...(r.merchant_fee_token_id !== null ? { merchant_fee_token_id: r.merchant_fee_token_id } : {}),
    commission_fee: { fee_amount: r.commission_fee },
    ...(r.failed_reason !== null ? { failed_reason: r.failed_reason } : {}),
    initiator: r.initiator,
    transactions: r.transactions.map(txView),
    created_timestamp: seconds(r.created_at),
    updated_timestamp: seconds(r.updated_at),
  };
}

export interface OrderRecord {
  order_id: string;
  merchant_id: string;
  token_id: string;
  payable_amount: string;
  received_token_amount: string;
  status: string;
  merchant_order_code: string;
  psp_order_code: string;
  created_at: Date;
  updated_at: Date;
}

/** The pay-in Order (amounts in the token; order_amount in USD, 1:1 for these stablecoins). */
export function orderView(o: OrderRecord): Record<string, unknown> {
  return {
    order_id: o.order_id,
    merchant_id: o.merchant_id,
    token_id: o.token_id,
    chain_id: chainOf(o.token_id),
    payable_amount: o.payable_amount,
    received_token_amount: o.received_token_amount,
    currency: 'USD',
    order_amount: o.payable_amount,
    status: o.status,
    merchant_order_code: o.merchant_order_code,
    psp_order_code: o.psp_order_code,
    created_timestamp: seconds(o.created_at),
    updated_timestamp: seconds(o.updated_at),
  };
}

// ---------------------------------------------------------------------------------------
// Webhooks (providers.md §2.5)

export const REFUND_WEBHOOK_TYPE = 'payment.refund.status.updated';

/** Back-off before each retry (sandbox-short): a failed first delivery is retried 6 times. */
export const WEBHOOK_RETRY_DELAYS_MS = [500, 1_000, 2_000, 4_000, 8_000, 16_000] as const;

/** Delay before the next attempt after `attemptsMade` failed ones, or undefined when out of retries. */
export function webhookRetryDelay(attemptsMade: number): number | undefined {
  return WEBHOOK_RETRY_DELAYS_MS[attemptsMade - 1];
}

/** Any 2xx acknowledges a delivery (the SDK's demo answers 201). */
export function isWebhookAcknowledged(status: number): boolean {
  return status >= 200 && status < 300;
}

export interface WebhookAttempt {
  eventId: string;
  url: string;
  /** The refund snapshot (Refund fields), as stored when the status changed. */
  refund: Record<string, unknown>;
  /** Same on every retry (ms). */
  createdMs: number;
  /** Failed attempts so far. */
  attemptsMade: number;
  /** When this attempt goes out (ms). */
  now: number;
}

/**
 * The WebhookEvent body of one delivery attempt. The envelope's status fields describe the
 * delivery and their exact meaning is [INF]: this attempt is "Retrying" while retries are
 * left after it ("Failed" on the last one), with when the next retry would go out.
 */
export function buildWebhookEvent(w: WebhookAttempt): string {
  const retriesLeft = Math.max(0, WEBHOOK_RETRY_DELAYS_MS.length - w.attemptsMade);
  const nextDelay = webhookRetryDelay(w.attemptsMade + 1);
  return JSON.stringify({
    event_id: w.eventId,
    url: w.url,
    type: REFUND_WEBHOOK_TYPE,
    data: { data_type: 'PaymentRefund', ...w.refund },
    created_timestamp: w.createdMs,
    status: retriesLeft > 0 ? 'Retrying' : 'Failed',
    next_retry_timestamp: nextDelay === undefined ? 0 : w.now + nextDelay,
    retries_left: retriesLeft,
  });
}
