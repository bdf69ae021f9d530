import type {
  ProviderName,
  ProviderRefundLookup,
  ProviderRefundPage,
  ProviderRefundRecord,
  RefundProvider,
  RefundReference,
  RefundWindow,
} from '../providers/provider.js';
import { retryDelayMs, type ReconciliationSettings } from './reconciliation-settings.js';

/** A provider call failed past its retries: the run ends `failed` with this message. */
export class ProviderGaveUp extends Error {}

/** Checked between calls: throws when the run must stop (lease lost, shutdown). */
export type AbortCheck = () => void;

/**
 * Where a run reads the provider's side. Sources never change anything at the provider.
 * - `pages`: the provider's refunds around the window, page by page (providers with a list
 *   endpoint); records outside the window may be included, the runner filters.
 * - `lookup`: the provider's record of one refund of ours (all providers).
 */
export interface RecordSource {
  readonly provider: ProviderName;
  pages?(window: RefundWindow): AsyncGenerator<ProviderRefundRecord[]>;
  lookup(ref: RefundReference): Promise<Exclude<ProviderRefundLookup, { kind: 'error' }>>;
}

/** Repeats a provider call on `error` with backoff and jitter; past the budget, ProviderGaveUp. */
async function withRetries<T extends { kind: string }>(
  what: string,
  settings: ReconciliationSettings,
  abort: AbortCheck,
  call: () => Promise<T>,
): Promise<Exclude<T, { kind: 'error' }>> {
  for (let attempt = 0; ; attempt++) {
    abort();
    let result: T | { kind: 'error'; reason: string; retryAfterMs?: number };
    try {
      result = await call();
    } catch (err) {
      // Adapters classify answers themselves; a throw is e.g. credentials that cannot be loaded.
      result = { kind: 'error', reason: (err as Error).message };
    }
    if (result.kind !== 'error') return result as Exclude<T, { kind: 'error' }>;
    const failure = result as unknown as { reason: string; retryAfterMs?: number };
    if (attempt >= settings.providerRetries) {
      throw new ProviderGaveUp(`${what} failed after ${attempt + 1} attempts: ${failure.reason}`);
    }
    await sleep(retryDelayMs(attempt + 1, settings.retryBaseMs, failure.retryAfterMs));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Walks a provider's refund list from the first page. The list has no time filter (Cobo,
 * Lean), so the walk stops early only on evidence: the records so far came newest first
 * (never one newer than the oldest seen by more than the slack, and at least one strictly
 * older than an earlier one) and the oldest seen is older than the window by twice the
 * slack, so no later page can hold a record of the window. Without that evidence (the
 * order is not documented by either provider) it reads to the last page. Either way at
 * most `maxPages`.
 */
abstract class ListingRecordSource implements RecordSource {
  abstract readonly provider: ProviderName;

  constructor(
    protected readonly adapter: RefundProvider,
    protected readonly settings: ReconciliationSettings,
    protected readonly abort: AbortCheck,
  ) {}

  async *pages(window: RefundWindow): AsyncGenerator<ProviderRefundRecord[]> {
    const list = this.adapter.listRefunds!.bind(this.adapter);
    const stopBefore = window.from.getTime() - 2 * this.settings.slackMs;
    let cursor: string | null = null;
    let oldest = Infinity;
    let newestFirst = true;
    // Evidence of the order needs two records at different times, the later one older.
    let descending = false;
    for (let page = 1; ; page++) {
      if (page > this.settings.maxPages) {
        throw new ProviderGaveUp(`${this.provider} refund list is longer than ${this.settings.maxPages} pages (RECONCILIATION_MAX_PAGES)`);
      }
      const at: string | null = cursor;
      const result: Extract<ProviderRefundPage, { kind: 'page' }> = await withRetries(
        `${this.provider} refund list page ${page}`,
        this.settings,
        this.abort,
        () => list(window, at),
      );
      for (const r of result.records) {
        if (!r.createdAt) continue;
        const t = r.createdAt.getTime();
        if (t > oldest + this.settings.slackMs) newestFirst = false;
        if (t < oldest && oldest !== Infinity) descending = true;
        oldest = Math.min(oldest, t);
      }
      yield result.records;
      if (result.nextCursor === null || result.records.length === 0) return;
      if (newestFirst && descending && oldest < stopBefore) return;
      cursor = result.nextCursor;
    }
  }

  lookup(ref: RefundReference) {
    return withRetries(`${this.provider} lookup of ${ref.providerRequestId}`, this.settings, this.abort, () => this.adapter.lookupRefund!(ref));
  }
}

/** Cobo: `GET /payments/refunds` with `after` cursors (providers.md §2.1); lookups by refund id or request_id. */
export class CoboRecordSource extends ListingRecordSource {
  readonly provider = 'cobo' as const;
}

/** Lean: `GET /payouts/refunds` by page number, filtered by created_at here (providers.md §3.3). */
export class LeanRecordSource extends ListingRecordSource {
  readonly provider = 'lean' as const;
}

/** Binance Pay has no refund list: every refund of ours is asked for by its refundRequestId (§1.2). */
export class BinancePayRecordSource implements RecordSource {
  readonly provider = 'binance_pay' as const;

  constructor(
    private readonly adapter: RefundProvider,
    private readonly settings: ReconciliationSettings,
    private readonly abort: AbortCheck,
  ) {}

  lookup(ref: RefundReference) {
    return withRetries(`binance_pay query of ${ref.providerRequestId}`, this.settings, this.abort, () => this.adapter.lookupRefund!(ref));
  }
}

/** The record source of a provider, or undefined when its adapter cannot be reconciled. */
export function recordSourceFor(adapter: RefundProvider, settings: ReconciliationSettings, abort: AbortCheck): RecordSource | undefined {
  if (!adapter.lookupRefund) return undefined;
  switch (adapter.name) {
    case 'cobo':
      return adapter.listRefunds ? new CoboRecordSource(adapter, settings, abort) : undefined;
    case 'lean':
      return adapter.listRefunds ? new LeanRecordSource(adapter, settings, abort) : undefined;
    case 'binance_pay':
      return new BinancePayRecordSource(adapter, settings, abort);
  }
}
