import { Injectable, Logger } from '@nestjs/common';
import { LosslessNumber } from 'lossless-json';
import { formatAmount, isDecimalString } from '../../common/money.js';
import type {
  CallRecord,
  CreateInput,
  PaymentLookup,
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
import { LeanCall, LeanClient } from './lean.client.js';
import { approveBody, classifyCreateError, createBody, outcomeOfRefund, paymentOf } from './lean.transformers.js';

export interface LeanReason {
  code: string;
  description: string | null;
}

const REASONS_TTL_MS = 10 * 60_000;

/** Page size when searching Lean's refund list for our external_reference. */
const PAGE_SIZE = 100;
/** Pages searched at most in one query; a longer search answers `unknown` and resumes later. */
const MAX_PAGES = 50;

type Answer = Extract<LeanCall, { kind: 'answer' }>;

/**
 * Lean Pay-by-Bank refunds. Lean has no idempotency key, so this adapter never re-sends a
 * create on its own: the core asks `queryRefund` first, which searches Lean's refund list
 * for our external_reference, and re-sends only after a complete search found nothing.
 * Creating is followed by approving (Lean's maker-checker step): the service's own
 * approval policy has already been applied before a refund reaches the worker.
 */
@Injectable()
export class LeanAdapter implements RefundProvider {
  readonly name = 'lean' as const;
  readonly createIsIdempotent = false;
  readonly amountDecimals = 2;

  private readonly logger = new Logger('LeanAdapter');
  private reasonCache?: { at: number; reasons: LeanReason[] };

  constructor(private readonly client: LeanClient) {}

  /** Lean's refund reasons, cached for REASONS_TTL_MS (they change rarely). */
  async reasons(): Promise<LeanReason[]> {
    if (this.reasonCache && Date.now() - this.reasonCache.at < REASONS_TTL_MS) return this.reasonCache.reasons;
    const call = await this.client.request('GET', '/payouts/refunds/reasons', null);
    if (call.kind === 'answer' && call.ok && Array.isArray(call.body)) {
      const reasons = (call.body as Record<string, unknown>[])
        .filter((r) => typeof r.code === 'string')
        .map((r) => ({ code: String(r.code), description: typeof r.description === 'string' ? r.description : null }));
      this.reasonCache = { at: Date.now(), reasons };
      return reasons;
    }
    // Stale is better than nothing when Lean is briefly unreachable.
    if (this.reasonCache) return this.reasonCache.reasons;
    throw new Error('Lean refund reasons unavailable');
  }

  isEnabled(): boolean {
    return this.client.isEnabled();
  }

  /** Lean payment ids are UUIDs; one canonical (lower-case) form keeps one payment one row. */
  normalizePaymentId(paymentId: string): string {
    return paymentId.toLowerCase();
  }

  validateCreate(input: CreateInput) {
    const errors: { field: string; message: string }[] = [];
    if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(input.paymentId)) {
      errors.push({ field: 'paymentId', message: 'Lean payment ids are UUIDs' });
    }
    if (!['AED', 'SAR'].includes(input.currency)) errors.push({ field: 'currency', message: 'Lean refunds are in AED or SAR' });
    const code = (input.options as { reasonCode?: string }).reasonCode;
    const known = this.reasonCache?.reasons.map((r) => r.code);
    // Checked against Lean's own list once fetched; the DTO already limits it to the documented four.
    if (code && known && known.length > 0 && !known.includes(code)) {
      errors.push({ field: 'lean.reasonCode', message: `Lean does not offer reason ${code}; one of ${known.join(', ')}` });
    }
    return errors;
  }

  lookupPayment(paymentId: string): Promise<PaymentLookup> {
    return lookupWithRetries(() => this.lookupPaymentOnce(paymentId));
  }

  private async lookupPaymentOnce(paymentId: string): Promise<PaymentLookup> {
    const call = await this.client.request('GET', `/payments/v1/${encodeURIComponent(paymentId)}`, null);
    if (call.kind === 'no_answer') return { kind: 'unavailable', reason: call.reason, transient: true, retryAfterMs: call.retryAfterMs };
    if (!call.ok) {
      if (call.httpStatus === 404 || call.errorStatus === 'NOT_FOUND' || call.errorStatus === 'INVALID_URL') return { kind: 'not_found' };
      if (call.httpStatus === 400 && call.errorStatus === 'INVALID_PARAMETERS') return { kind: 'not_found' };
      return { kind: 'unavailable', reason: `payment lookup failed: Lean ${call.errorStatus ?? call.httpStatus}` };
    }
    const body = call.body && typeof call.body === 'object' && !Array.isArray(call.body) ? (call.body as Record<string, unknown>) : {};
    const payment = paymentOf(body, paymentId);
    return payment ? { kind: 'found', payment } : { kind: 'unavailable', reason: 'payment answer lacks amount, currency or status' };
  }

  async submitRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const call = await this.client.request('POST', '/payouts/refunds', null, createBody(cmd));
    const record = this.record('create', call);
    if (call.kind === 'no_answer') return { outcome: this.noAnswer(call, true), call: record };
    if (!call.ok) return { outcome: classifyCreateError(call.httpStatus, call.errorStatus, call.message), call: record };
    const created = Array.isArray(call.body) ? (call.body[0] as Record<string, unknown> | undefined) : undefined;
    if (!created || typeof created.refund_id !== 'string') {
      return { outcome: { kind: 'unknown', reason: 'create answer without refund_id' }, call: record };
    }
    return this.approveIfCreated(created, cmd, record);
  }

  /**
   * Where is our refund at Lean? Searches the list (newest first) for our external_reference;
   * a refund still CREATED is approved here, which is how an interrupted create+approve resumes.
   */
  async queryRefund(cmd: RefundCommand): Promise<ProviderResult> {
    const search = await this.find(cmd);
    if (search.kind !== 'found') return { outcome: search.outcome, call: search.record };
    return this.approveIfCreated(search.refund, cmd, search.record);
  }

  /**
   * Reconciliation: page `cursor` (a page number, 0 first) of `GET /payouts/refunds`
   * (providers.md §3.3). Lean's list has no date filter, so the window is not sent. A page
   * that does not echo the number and size asked for is not trusted (an error, retried).
   */
  async listRefunds(_window: RefundWindow, cursor: string | null): Promise<ProviderRefundPage> {
    const page = cursor === null ? 0 : Number(cursor);
    if (!Number.isSafeInteger(page) || page < 0) return { kind: 'error', reason: `bad page cursor ${cursor}` };
    const call = await this.client.request('GET', '/payouts/refunds', new URLSearchParams({ size: String(PAGE_SIZE), page: String(page) }));
    if (call.kind === 'no_answer') return { kind: 'error', reason: call.reason, retryAfterMs: call.retryAfterMs };
    if (!call.ok) return { kind: 'error', reason: `list failed: Lean ${call.errorStatus ?? call.httpStatus}` };
    const body = call.body as { content?: unknown; page?: Record<string, unknown> } | null;
    if (!body || !Array.isArray(body.content)) return { kind: 'error', reason: 'list answer without content' };
    const number = Number(String(body.page?.number));
    const size = Number(String(body.page?.size));
    const totalPages = Number(String(body.page?.total_pages));
    if (number !== page || size !== PAGE_SIZE || !Number.isInteger(totalPages) || totalPages < 0) {
      return { kind: 'error', reason: 'list paging not as asked' };
    }
    return {
      kind: 'page',
      records: (body.content as Record<string, unknown>[]).map(leanRecord),
      nextCursor: page + 1 < totalPages ? String(page + 1) : null,
    };
  }

  /**
   * Reconciliation: the same complete search as queryRefund (absence only on evidence), but
   * read only: a refund still CREATED is reported as it is, never approved from here.
   */
  async lookupRefund(ref: RefundReference): Promise<ProviderRefundLookup> {
    const search = await this.find({ refundId: ref.providerRequestId, ...ref });
    if (search.kind === 'found') return { kind: 'found', record: leanRecord(search.refund) };
    if (search.kind === 'not_found') return { kind: 'not_found' };
    const o = search.outcome;
    return { kind: 'error', reason: o.kind === 'retry' || o.kind === 'unknown' ? o.reason : 'search inconclusive', ...(o.kind === 'retry' ? { retryAfterMs: o.retryAfterMs } : {}) };
  }

  private async approveIfCreated(refund: Record<string, unknown>, cmd: RefundCommand, first: CallRecord): Promise<ProviderResult> {
    const current = outcomeOfRefund(refund, cmd);
    if (refund.status !== 'CREATED') return { outcome: current, call: first };
    const call = await this.client.request('PUT', '/payouts/refunds', null, approveBody(String(refund.refund_id)));
    const approve = this.record('approve', call);
    let outcome: ProviderOutcome = current;
    if (call.kind === 'answer' && call.ok && Array.isArray(call.body)) {
      const item = (call.body as Record<string, unknown>[]).find((r) => r.refund_id === refund.refund_id);
      if (item?.status) outcome = outcomeOfRefund({ ...refund, status: item.status }, cmd);
    }
    // A failed or unanswered approve leaves the refund CREATED at Lean: the next query approves it.
    return { outcome, call: first, extraCalls: [{ ...approve, outcome: call.kind === 'answer' && call.ok ? 'approved' : 'unknown' }] };
  }

  /**
   * Searches Lean's refund list for ours. Absence is concluded only on evidence this code
   * can check: every page up to `total_pages` was read, each answer echoing the page number
   * and size asked for. Paging behaviour, sort order and the payment_id filter are not
   * documented (providers.md §3.3), so nothing is assumed from them; a search that cannot be
   * completed answers `unknown` and is retried later, never `not_found`.
   */
  private async find(
    cmd: Pick<RefundCommand, 'refundId' | 'paymentId' | 'providerRequestId' | 'providerRefundId'>,
  ): Promise<{ kind: 'found'; refund: Record<string, unknown>; record: CallRecord } | { kind: 'not_found' | 'unsure'; outcome: ProviderOutcome; record: CallRecord }> {
    let record: CallRecord = { operation: 'query', httpStatus: null, providerCode: null, latencyMs: 0 };
    let latency = 0;
    const matches: Record<string, unknown>[] = [];
    const unsure = (reason: string) => ({ kind: 'unsure' as const, outcome: { kind: 'unknown' as const, reason }, record });
    for (let page = 0; page < MAX_PAGES; page++) {
      const call = await this.client.request(
        'GET',
        '/payouts/refunds',
        new URLSearchParams({ payment_id: cmd.paymentId, size: String(PAGE_SIZE), page: String(page) }),
      );
      latency += call.latencyMs;
      record = { ...this.record('query', call), latencyMs: latency };
      if (call.kind === 'no_answer') return { kind: 'unsure', outcome: this.noAnswer(call, false), record };
      if (!call.ok) return unsure(`list failed: Lean ${call.errorStatus ?? call.httpStatus}`);
      const body = call.body as { content?: unknown; page?: Record<string, unknown> } | null;
      if (!body || !Array.isArray(body.content)) return unsure('list answer without content');
      const items = body.content as Record<string, unknown>[];
      // Our provider request id is unique: the external_reference alone identifies our refund.
      matches.push(...items.filter((r) => r.external_reference === cmd.providerRequestId));
      const number = Number(String(body.page?.number));
      const size = Number(String(body.page?.size));
      const totalPages = Number(String(body.page?.total_pages));
      if (number !== page || size !== PAGE_SIZE || !Number.isInteger(totalPages) || totalPages < 0) {
        return matches.length ? this.pick(matches, cmd, record) : unsure('list paging not as asked; cannot prove absence');
      }
      if (page + 1 >= totalPages) {
        return matches.length ? this.pick(matches, cmd, record) : { kind: 'not_found', outcome: { kind: 'not_found' }, record };
      }
    }
    return matches.length ? this.pick(matches, cmd, record) : unsure(`not found in ${MAX_PAGES} pages; will search again`);
  }

  /** One match is ours; two refunds with our reference mean a duplicate that ops must see. */
  private pick(matches: Record<string, unknown>[], cmd: Pick<RefundCommand, 'refundId' | 'providerRefundId'>, record: CallRecord) {
    const byId = cmd.providerRefundId ? matches.filter((r) => r.refund_id === cmd.providerRefundId) : [];
    const distinct = new Set(matches.map((r) => String(r.refund_id)));
    if (byId.length === 1) return { kind: 'found' as const, refund: byId[0], record };
    if (distinct.size === 1) return { kind: 'found' as const, refund: matches[0], record };
    this.logger.error({ refundId: cmd.refundId, leanRefundIds: [...distinct] }, 'Lean holds several refunds with our reference; approving none');
    return { kind: 'unsure' as const, outcome: { kind: 'unknown' as const, reason: 'several Lean refunds carry our reference' }, record };
  }

  private noAnswer(call: Extract<LeanCall, { kind: 'no_answer' }>, isCreate: boolean): ProviderOutcome {
    if (call.retryAfterMs !== undefined || call.notSent) return { kind: 'retry', reason: call.reason, retryAfterMs: call.retryAfterMs };
    return { kind: 'unknown', reason: isCreate ? `create outcome unknown: ${call.reason}` : call.reason };
  }

  private record(operation: string, call: LeanCall): CallRecord {
    const a = call.kind === 'answer' ? (call as Answer) : undefined;
    return {
      operation,
      httpStatus: call.httpStatus,
      providerCode: a?.errorStatus ?? null,
      latencyMs: call.latencyMs,
      errorMessage: a ? a.message : (call as Extract<LeanCall, { kind: 'no_answer' }>).reason,
    };
  }
}

function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v instanceof LosslessNumber) return v.toString();
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

/** A Lean refund object as a reconciliation record, mapped with outcomeOfRefund (contract §3). */
export function leanRecord(r: Record<string, unknown>): ProviderRefundRecord {
  const amountText = text(r.amount);
  const amount = amountText !== undefined && isDecimalString(amountText) ? formatAmount(amountText) : null;
  const reference = typeof r.external_reference === 'string' ? r.external_reference : null;
  const outcome = outcomeOfRefund(r, { amount: amount ?? '0', reason: 'other', options: {}, providerRequestId: reference ?? '' });
  const status = outcome.kind === 'pending' || outcome.kind === 'final' ? outcome.status : 'processing';
  let refundedAmount: string | null = null;
  if (outcome.kind === 'final') refundedAmount = outcome.status === 'failed' ? '0' : (outcome.update.refundedAmount ?? null);
  // ISO 8601 UTC with microseconds (providers.md §3.4); Date keeps milliseconds.
  const created = typeof r.created_at === 'string' ? new Date(r.created_at) : undefined;
  return {
    providerRefundId: typeof r.refund_id === 'string' ? r.refund_id : null,
    providerRequestId: reference,
    paymentId: typeof r.payment_id === 'string' ? r.payment_id.toLowerCase() : null,
    status,
    providerStatus: typeof r.status === 'string' ? r.status : null,
    amount,
    refundedAmount,
    currency: typeof r.currency === 'string' ? r.currency : null,
    createdAt: created && !Number.isNaN(created.getTime()) ? created : null,
  };
}
