import { randomUUID } from 'node:crypto';
import { sleep } from './harness.js';
import { NetworkError, expectStatus, http, mapLimit } from './http.js';

export type Provider = 'binance_pay' | 'cobo' | 'lean';
export const PROVIDERS: Provider[] = ['binance_pay', 'cobo', 'lean'];
export const FINAL_STATUSES = ['succeeded', 'partially_succeeded', 'failed', 'canceled'];

export const MERCHANT_ID = 'M1001';

export interface Payment {
  provider: Provider;
  paymentId: string;
  amount: string;
  currency: string;
}

export interface RefundRequest {
  key: string;
  provider: Provider;
  paymentId: string;
  amount: string;
  body: Record<string, unknown>;
}

export type Outcome =
  | { kind: 'accepted'; id: string; status: number }
  | { kind: 'rejected'; status: number; code: string }
  | { kind: 'unanswered'; error: string };

/** One HTTP answer (or network failure) seen by a merchant, with the phase it fell in. */
export interface Answer {
  at: number;
  phase: string;
  target: string;
  status: number | 'network';
  code?: string;
  ms: number;
  /** The request's Idempotency-Key, and the refund id a 2xx named. */
  key?: string;
  id?: string;
}

/**
 * What the merchants saw: every answer to every create (retries included), tagged with the
 * scenario's current phase ("normal", "redis_down", "postgres_down", ...), and the final
 * outcome of each request.
 */
export class LoadRecorder {
  phase = 'normal';
  readonly answers: Answer[] = [];
  readonly outcomes = new Map<string, { req: RefundRequest; outcome: Outcome }>();

  accepted(): Array<{ req: RefundRequest; id: string }> {
    const out: Array<{ req: RefundRequest; id: string }> = [];
    for (const { req, outcome } of this.outcomes.values()) if (outcome.kind === 'accepted') out.push({ req, id: outcome.id });
    return out;
  }

  byKind(kind: Outcome['kind']): RefundRequest[] {
    return [...this.outcomes.values()].filter((o) => o.outcome.kind === kind).map((o) => o.req);
  }

  /** "202": n, "503 service_unavailable": n, ... for one phase (or all). */
  histogram(phase?: string): Record<string, number> {
    const h: Record<string, number> = {};
    for (const a of this.answers) {
      if (phase !== undefined && a.phase !== phase) continue;
      const label = a.status === 'network' ? 'network_error' : a.code && a.status >= 400 ? `${a.status} ${a.code}` : String(a.status);
      h[label] = (h[label] ?? 0) + 1;
    }
    return h;
  }

  latencies(phase?: string): { n: number; p50: number; max: number } {
    const ms = this.answers.filter((a) => phase === undefined || a.phase === phase).map((a) => a.ms).sort((a, b) => a - b);
    return { n: ms.length, p50: ms[Math.floor(ms.length / 2)] ?? 0, max: ms.at(-1) ?? 0 };
  }
}

/** Answers that are server errors other than a documented 503 service_unavailable. */
export function serverErrors(recorder: LoadRecorder): Answer[] {
  return recorder.answers.filter((a) => typeof a.status === 'number' && a.status >= 500 && !(a.status === 503 && a.code === 'service_unavailable'));
}

export async function createMerchantKey(apiUrl: string, adminKey: string, merchantId = MERCHANT_ID): Promise<string> {
  const res = await expectStatus(201, 'POST', `${apiUrl}/v1/api-keys`, {
    headers: { authorization: `Bearer ${adminKey}` },
    body: { role: 'merchant', merchantId, name: `${merchantId} chaos` },
  });
  return res.body.key as string;
}

const CURRENCY: Record<Provider, string> = { binance_pay: 'USDT', cobo: 'USDT', lean: 'AED' };

/** Paid orders at the sandbox providers, `perProvider` of each, all of `amount`. */
export async function createPayments(apiUrl: string, perProvider: number, amount = '100.00'): Promise<Payment[]> {
  const specs = PROVIDERS.flatMap((provider) => Array.from({ length: perProvider }, () => provider));
  return mapLimit(specs, 6, async (provider) => {
    const extra = provider === 'cobo' ? { tokenId: 'TRON_USDT', merchantId: MERCHANT_ID } : {};
    const res = await expectStatus(201, 'POST', `${apiUrl}/sandbox/payments`, {
      body: { provider, amount, currency: CURRENCY[provider], ...extra },
    });
    return { provider, paymentId: res.body.paymentId as string, amount, currency: CURRENCY[provider] };
  });
}

function amountBetween(rand: () => number, min: number, max: number): string {
  // Whole cents, formatted without floating point.
  const cents = Math.round(min * 100) + Math.floor(rand() * (Math.round((max - min) * 100) + 1));
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
}

/**
 * `perPayment` refund requests per payment, amounts between min and max (so their sum
 * often exceeds the payment and the over-refund guard has work), shuffled so each payment's
 * refunds are spread over the run and race each other. Cobo refunds carry an address; about
 * one in ten ends Failed and one in ten PartiallyCompleted at the emulator (FAIL / PARTIAL
 * address prefixes).
 */
export function planRefunds(payments: Payment[], perPayment: number, rand: () => number, min = 10, max = 32): RefundRequest[] {
  const reasons = ['requested_by_customer', 'duplicate', 'other', 'order_canceled'];
  const plan: RefundRequest[] = [];
  for (const p of payments) {
    for (let i = 0; i < perPayment; i++) {
      const amount = amountBetween(rand, min, max);
      const body: Record<string, unknown> = {
        provider: p.provider,
        paymentId: p.paymentId,
        amount,
        currency: p.currency,
        reason: reasons[Math.floor(rand() * reasons.length)],
        metadata: { chaos: 'true' },
      };
      if (p.provider === 'cobo') {
        const r = rand();
        const prefix = r < 0.1 ? 'FAIL' : r < 0.2 ? 'PARTIAL' : 'T';
        body.cobo = { tokenId: 'TRON_USDT', toAddress: `${prefix}Chaos${Math.floor(rand() * 1e9)}` };
      }
      plan.push({ key: `chaos-${randomUUID()}`, provider: p.provider, paymentId: p.paymentId, amount, body });
    }
  }
  for (let i = plan.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [plan[i], plan[j]] = [plan[j]!, plan[i]!];
  }
  return plan;
}

export interface SubmitOptions {
  /** Where the first attempt goes (undefined: the fallback). */
  target: (req: RefundRequest, index: number) => string | undefined;
  /** Where retries go (an API process that is not killed). */
  fallback: string;
  merchantKey: string;
  recorder: LoadRecorder;
  /** Requests are started evenly over this many ms. */
  spreadMs: number;
  concurrency: number;
  /** No new attempt after this time; the request is then `unanswered`. */
  deadline: number;
  /** Stop early (e.g. the process retries go to has died): remaining requests are `unanswered`. */
  giveUp?: () => boolean;
}

/**
 * Sends the creates like a careful merchant: the same Idempotency-Key and body again after
 * a network error, a 5xx or a 429 (the outcome of the first try is unknown), until a 2xx or
 * a 4xx answer or the deadline. Every answer is recorded.
 */
export async function submitRefunds(plan: RefundRequest[], opts: SubmitOptions): Promise<void> {
  const started = Date.now();
  const interval = plan.length > 1 ? opts.spreadMs / plan.length : 0;
  await mapLimit(plan, opts.concurrency, async (req, index) => {
    const slot = started + index * interval;
    if (slot > Date.now()) await sleep(slot - Date.now());
    let target = opts.target(req, index) ?? opts.fallback;
    let lastError = 'never sent';
    for (let attempt = 0; Date.now() < opts.deadline && !opts.giveUp?.(); attempt++) {
      const phase = opts.recorder.phase;
      const t0 = Date.now();
      try {
        const res = await http('POST', `${target}/v1/refunds`, {
          headers: { authorization: `Bearer ${opts.merchantKey}`, 'idempotency-key': req.key },
          body: req.body,
          timeoutMs: 15_000,
        });
        const code = typeof res.body === 'object' && res.body ? (res.body.code as string | undefined) : undefined;
        const id = res.status === 202 || res.status === 200 ? (res.body.id as string) : undefined;
        opts.recorder.answers.push({ at: t0, phase, target, status: res.status, code, ms: res.ms, key: req.key, id });
        if (res.status === 202 || res.status === 200) {
          opts.recorder.outcomes.set(req.key, { req, outcome: { kind: 'accepted', id: res.body.id as string, status: res.status } });
          return;
        }
        if (res.status >= 400 && res.status < 500 && res.status !== 429) {
          opts.recorder.outcomes.set(req.key, { req, outcome: { kind: 'rejected', status: res.status, code: code ?? '?' } });
          return;
        }
        lastError = `${res.status} ${code ?? ''}`;
      } catch (err) {
        if (!(err instanceof NetworkError)) throw err;
        opts.recorder.answers.push({ at: t0, phase, target, status: 'network', ms: Date.now() - t0, key: req.key });
        lastError = err.message;
      }
      target = opts.fallback;
      await sleep(Math.min(2_000, 250 * 2 ** Math.min(attempt, 3)));
    }
    opts.recorder.outcomes.set(req.key, { req, outcome: { kind: 'unanswered', error: lastError } });
  });
}
