import { decimalPlaces, formatAmount, isDecimalString, money } from '../../common/money.js';
import type { CreateInput, ProviderOutcome, ProviderPayment, ProviderUpdate, RefundCommand } from '../provider.js';

/**
 * Pure translation between our model and Cobo Payments (WaaS 2.0, providers.md §2).
 */

/** Supported refund tokens and the currency (asset) each one carries. */
export const COBO_TOKENS: Record<string, string> = {
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
};

export interface CoboOptions {
  tokenId: string;
  toAddress?: string;
  refundType?: 'merchant' | 'psp';
  merchantFee?: { amount: string; tokenId: string };
}

/** Field checks of the `cobo` block beyond its shape (contract §4, issue 3). */
export function validateCoboCreate(input: CreateInput): { field: string; message: string }[] {
  const errors: { field: string; message: string }[] = [];
  const o = input.options as Partial<CoboOptions>;
  if (!o.tokenId) return [{ field: 'cobo.tokenId', message: 'cobo.tokenId is required' }];
  const asset = COBO_TOKENS[o.tokenId];
  if (!asset) {
    errors.push({ field: 'cobo.tokenId', message: `unsupported token; one of ${Object.keys(COBO_TOKENS).join(', ')}` });
  } else if (asset !== input.currency) {
    errors.push({ field: 'currency', message: `token ${o.tokenId} carries ${asset}, not ${input.currency}` });
  }
  const fee = o.merchantFee;
  if (fee) {
    if ((o.refundType ?? 'merchant') !== 'merchant') {
      errors.push({ field: 'cobo.merchantFee', message: 'merchantFee is only allowed with refundType merchant' });
    }
    if (fee.tokenId !== o.tokenId) errors.push({ field: 'cobo.merchantFee.tokenId', message: 'must equal cobo.tokenId' });
    if (!isDecimalString(fee.amount) || money(fee.amount).lte(0)) {
      errors.push({ field: 'cobo.merchantFee.amount', message: 'must be a decimal string above 0' });
    } else {
      if (decimalPlaces(fee.amount) > 2) errors.push({ field: 'cobo.merchantFee.amount', message: 'at most 2 decimal places' });
      if (isDecimalString(input.amount) && !money(fee.amount).lt(input.amount)) {
        errors.push({ field: 'cobo.merchantFee.amount', message: 'must be below the refund amount' });
      }
    }
  }
  return errors;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined;
}

function amountOf(v: unknown): string | undefined {
  const s = str(v);
  return s !== undefined && isDecimalString(s) ? formatAmount(s) : undefined;
}

export function createBody(cmd: RefundCommand): string {
  const o = cmd.options as Partial<CoboOptions>;
  const fee = o.merchantFee;
  const body: Record<string, unknown> = {
    request_id: cmd.providerRequestId,
    ...(typeof cmd.paymentData.coboMerchantId === 'string' ? { merchant_id: cmd.paymentData.coboMerchantId } : {}),
    order_id: cmd.paymentId,
    payable_amount: formatAmount(cmd.amount),
    token_id: o.tokenId,
    refund_type: o.refundType === 'psp' ? 'Psp' : 'Merchant',
    ...(o.toAddress ? { to_address: o.toAddress } : {}),
    ...(fee
      ? { charge_merchant_fee: true, merchant_fee_amount: formatAmount(fee.amount), merchant_fee_token_id: fee.tokenId }
      : {}),
  };
  return JSON.stringify(body);
}

interface CoboTransaction {
  tx_id?: unknown;
  tx_hash?: unknown;
  amount?: unknown;
  status?: unknown;
  to_address?: unknown;
  from_address?: unknown;
  token_id?: unknown;
  created_timestamp?: unknown;
  updated_timestamp?: unknown;
  failed_reason?: unknown;
}

/** providerDetails for Cobo (contract §3). */
export function coboDetails(refund: Record<string, unknown>): Record<string, unknown> {
  const txs = Array.isArray(refund.transactions) ? (refund.transactions as CoboTransaction[]) : [];
  const feeAmount = amountOf(refund.merchant_fee_amount);
  const charged = refund.charge_merchant_fee === true && feeAmount !== undefined;
  const commission = refund.commission_fee as { fee_amount?: unknown } | undefined;
  return {
    tokenId: str(refund.token_id) ?? null,
    chainId: str(refund.chain_id) ?? null,
    toAddress: str(refund.to_address) || null,
    refundType: refund.refund_type === 'Psp' ? 'psp' : refund.refund_type === 'Merchant' ? 'merchant' : null,
    merchantFee: charged ? { amount: feeAmount, tokenId: str(refund.merchant_fee_token_id) ?? str(refund.token_id) } : null,
    commissionFee: amountOf(commission?.fee_amount) ?? null,
    transactions: txs.map((t) => ({
      txId: str(t.tx_id) ?? null,
      txHash: str(t.tx_hash) ?? null,
      amount: amountOf(t.amount) ?? null,
      status: str(t.status) ?? null,
      fromAddress: str(t.from_address) ?? null,
      toAddress: str(t.to_address) ?? null,
      failedReason: str(t.failed_reason) ?? null,
      createdAt: toIso(t.created_timestamp),
      updatedAt: toIso(t.updated_timestamp),
    })),
  };
}

/** Transactions carry milliseconds (refunds carry seconds). */
function toIso(ms: unknown): string | null {
  const n = typeof ms === 'number' ? ms : typeof ms === 'string' && /^\d+$/.test(ms) ? Number(ms) : NaN;
  return Number.isFinite(n) ? new Date(n).toISOString() : null;
}

/** Sum of the amounts of completed transactions: what actually reached the payer. */
export function completedAmount(refund: Record<string, unknown>): string {
  const txs = Array.isArray(refund.transactions) ? (refund.transactions as CoboTransaction[]) : [];
  return formatAmount(
    txs.filter((t) => t.status === 'Completed').reduce((sum, t) => sum.plus(amountOf(t.amount) ?? '0'), money('0')),
  );
}

/** Cobo refund status → our outcome (refunds-api.md §3). */
export function outcomeOfRefund(refund: Record<string, unknown>, ourAmount: string): ProviderOutcome {
  const status = str(refund.status);
  const update: ProviderUpdate = {
    ...(str(refund.refund_id) ? { providerRefundId: str(refund.refund_id) } : {}),
    providerStatus: status,
    details: coboDetails(refund),
  };
  switch (status) {
    case 'PendingConfirmation':
      return { kind: 'pending', status: 'requires_action', update };
    case 'Pending':
      // Webhooks may arrive out of order: a late "Pending" must not undo "Processing".
      return { kind: 'pending', status: 'processing', update: { ...update, supersededBy: ['Processing'] } };
    case 'Processing':
      return { kind: 'pending', status: 'processing', update };
    case 'Completed':
      return { kind: 'final', status: 'succeeded', update: { ...update, refundedAmount: formatAmount(ourAmount) } };
    case 'PartiallyCompleted': {
      if (!Array.isArray(refund.transactions)) {
        // Without its transactions the paid part is unknown: wait for a full answer.
        return { kind: 'pending', status: 'processing', update };
      }
      const done = completedAmount(refund);
      if (money(done).gte(ourAmount)) {
        return { kind: 'final', status: 'succeeded', update: { ...update, refundedAmount: formatAmount(ourAmount) } };
      }
      if (money(done).isZero()) {
        // Nothing reached the payer: for money this is a failure, whatever the word.
        return failed(update, 'PartiallyCompleted', 'Cobo reported the refund partially completed with nothing paid out.');
      }
      return { kind: 'final', status: 'partially_succeeded', update: { ...update, refundedAmount: done } };
    }
    case 'Failed':
      return failed(update, 'Failed', str(refund.failed_reason) ?? 'Cobo failed the refund.');
    default:
      // AddressPending/AddressSubmitted (refund-link flow) and any new word: not final.
      return { kind: 'pending', status: 'processing', update };
  }
}

function failed(update: ProviderUpdate, code: string, message: string): ProviderOutcome {
  return { kind: 'final', status: 'failed', update: { ...update, failureCode: code, failureMessage: message } };
}

export interface CoboError {
  httpStatus: number;
  errorCode?: string;
  message?: string;
  /** The answer's Retry-After, in ms (rate limits). */
  retryAfterMs?: number;
}

/** A rate-limit answer: retry the same call, no sooner than Retry-After says (1 s without one). */
function rateLimited(e: CoboError, code: string): ProviderOutcome {
  return { kind: 'retry', reason: `Cobo rate limit ${code}`, retryAfterMs: e.retryAfterMs ?? 1_000 };
}

const AUTH_CODES = new Set(['2022', '2023', '2024', '2025']);
const RATE_CODES = new Set(['2010', '2026']);

/** Classifies an error answer to the create call. */
export function classifyCreateError(e: CoboError): ProviderOutcome {
  const code = e.errorCode ?? `HTTP_${e.httpStatus}`;
  if (e.httpStatus === 429 || RATE_CODES.has(code)) return rateLimited(e, code);
  if (e.httpStatus >= 500) return { kind: 'unknown', reason: `Cobo HTTP ${e.httpStatus} ${code}` };
  // The request id exists already: an earlier create landed. Resolve by lookup, never a new id.
  if (code === '2040') return { kind: 'unknown', reason: 'duplicate request_id: an earlier create landed' };
  return {
    kind: 'final',
    status: 'failed',
    update: { failureCode: code, failureMessage: e.message ?? `Cobo refused the refund (${code}).` },
  };
}

/** Classifies an error answer to a lookup (get or list): never conclusive about the refund. */
export function classifyQueryError(e: CoboError): ProviderOutcome {
  const code = e.errorCode ?? `HTTP_${e.httpStatus}`;
  if (e.httpStatus === 429 || RATE_CODES.has(code)) return rateLimited(e, code);
  return { kind: 'unknown', reason: `query failed: Cobo ${code}` };
}

export function isAuthError(code: string | undefined): boolean {
  return code !== undefined && AUTH_CODES.has(code);
}

/** Pay-in order → payment. Only Completed orders are refundable. */
export function paymentOfOrder(order: Record<string, unknown>, orderId: string): ProviderPayment | undefined {
  const tokenId = str(order.token_id);
  const received = amountOf(order.received_token_amount) ?? amountOf(order.payable_amount);
  const status = str(order.status);
  if (!tokenId || !received || !status) return undefined;
  const currency = COBO_TOKENS[tokenId] ?? tokenId;
  const merchantId = str(order.merchant_id);
  return {
    paymentId: orderId,
    amount: received,
    currency,
    providerStatus: status,
    refundable: status === 'Completed' && money(received).gt(0),
    ...(merchantId ? { providerMerchantId: merchantId } : {}),
    data: { tokenId, chainId: str(order.chain_id) ?? null, coboMerchantId: merchantId ?? null },
  };
}
