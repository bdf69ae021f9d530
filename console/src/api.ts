/**
 * The console's only door to the service: the /v1 API with the user's own key. The key is
 * kept in sessionStorage (this tab only, gone when the tab closes; never localStorage) and
 * cleared on sign-out or when the API refuses it.
 */
const KEY_STORAGE = 'refund-console.api-key';

export const session = {
  key(): string | null {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  save(key: string): void {
    sessionStorage.setItem(KEY_STORAGE, key);
  },
  clear(): void {
    sessionStorage.removeItem(KEY_STORAGE);
  },
};

/** An RFC 9457 problem answered by the API (or made up here for a network failure). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string | undefined,
    readonly code: string | undefined,
    readonly errors: Array<{ field: string; message: string }> = [],
  ) {
    super(detail ? `${title}: ${detail}` : title);
  }
}

/** Called when the API says the key is no longer valid (401). */
let onUnauthorized: (err: ApiError) => void = () => undefined;
export function setUnauthorizedHandler(fn: (err: ApiError) => void): void {
  onUnauthorized = fn;
}

interface RequestOptions {
  method?: 'GET' | 'POST';
  body?: unknown;
  /** A key to try instead of the session's (sign-in). */
  key?: string;
  signal?: AbortSignal;
}

async function send(path: string, opts: RequestOptions, accept: string): Promise<Response> {
  const key = opts.key ?? session.key();
  const headers: Record<string, string> = { Accept: `${accept}, application/problem+json` };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method: opts.method ?? 'GET',
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: opts.signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, 'Network error', 'The service did not answer. Check your connection and try again.', 'network');
  }
  if (res.ok) return res;
  const err = await problemOf(res);
  if (res.status === 401 && opts.key === undefined) onUnauthorized(err);
  throw err;
}

async function problemOf(res: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await res.json()) as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's error page): the status line is all there is.
  }
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  let detail = str(body.detail);
  const retryAfter = res.headers.get('Retry-After');
  if (res.status === 429 && retryAfter) detail = `${detail ?? 'Too many requests.'} Retry after ${retryAfter} s.`;
  const errors = Array.isArray(body.errors) ? (body.errors as Array<{ field: string; message: string }>) : [];
  return new ApiError(res.status, str(body.title) ?? (res.statusText || `HTTP ${res.status}`), detail, str(body.code), errors);
}

export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await send(path, opts, 'application/json');
  return (await res.json()) as T;
}

/** A file answer (the CSV export): its bytes and the name the server suggests. */
export async function apiFile(path: string, opts: RequestOptions = {}): Promise<{ blob: Blob; filename: string }> {
  const res = await send(path, opts, 'text/csv');
  const disposition = res.headers.get('Content-Disposition') ?? '';
  const match = /filename="([\w.-]{1,200})"/.exec(disposition);
  return { blob: await res.blob(), filename: match?.[1] ?? 'refunds.csv' };
}

/** A query string of the non-empty values. */
export function query(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export type Role = 'merchant' | 'ops' | 'finance' | 'admin';
export interface Me {
  role: Role;
  merchantId: string | null;
}

export interface Refund {
  id: string;
  merchantId: string;
  provider: string;
  paymentId: string;
  amount: string;
  currency: string;
  status: string;
  reason: string;
  description: string | null;
  metadata: Record<string, string>;
  refundedAmount: string;
  providerRefundId: string | null;
  providerStatus: string | null;
  failureCode: string | null;
  failureMessage: string | null;
  failureCategory: 'retryable' | 'final' | null;
  attemptCount: number;
  providerDetails: Record<string, unknown>;
  review: { reason: string; flaggedAt: string } | null;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
}

export interface Attempt {
  number: number;
  providerRequestId: string;
  operation: string;
  outcome: string;
  httpStatus: number | null;
  providerCode: string | null;
  errorMessage: string | null;
  latencyMs: number | null;
  createdAt: string;
}

export interface RefundEvent {
  from: string | null;
  to: string;
  actor: string;
  detail: Record<string, unknown>;
  createdAt: string;
}

export interface QueueHealth {
  name: string;
  counts: { waiting: number; active: number; delayed: number; failed: number; completed: number };
  oldestWaitingSeconds: number;
}

export interface SummaryRow {
  provider?: string;
  currency?: string;
  status?: string;
  merchantId?: string;
  day?: string;
  count: number;
  amount: string;
  refundedAmount: string;
}
