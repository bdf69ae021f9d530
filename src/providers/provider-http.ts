import { HttpService } from '@nestjs/axios';
import { Injectable } from '@nestjs/common';
import { AxiosError } from 'axios';
import http from 'node:http';
import https from 'node:https';
import { AppConfig } from '../config/config.js';
import type { PaymentLookup } from './provider.js';

export interface HttpAnswer {
  ok: true;
  status: number;
  body: string;
  headers: Record<string, string>;
  latencyMs: number;
}

/** The call did not produce an HTTP answer: the provider may or may not have acted. */
export interface HttpFailure {
  ok: false;
  reason: string;
  /** True when the request surely never reached the provider (connection refused). */
  notSent: boolean;
  latencyMs: number;
}

/**
 * HTTP to providers: raw text in and out (signatures cover exact bytes), a hard timeout,
 * keep-alive sockets, and no exceptions for HTTP statuses: adapters classify them.
 */
@Injectable()
export class ProviderHttp {
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 512 });

  constructor(
    private readonly http: HttpService,
    private readonly cfg: AppConfig,
  ) {}

  async request(opts: {
    method: 'GET' | 'POST' | 'PUT';
    url: string;
    headers: Record<string, string>;
    body?: string;
  }): Promise<HttpAnswer | HttpFailure> {
    const started = performance.now();
    const latency = () => Math.round(performance.now() - started);
    try {
      // The module's axios instance itself, not HttpService.request(): that wraps each call in
      // an rxjs Observable whose unsubscribe, right after the answer, aborts the finished
      // request and builds a CanceledError (with a stack) every time — about a sixth of the
      // worker's CPU in the benchmark's profile (docs/performance.md).
      const res = await this.http.axiosRef.request<string>({
        method: opts.method,
        url: opts.url,
        headers: opts.headers,
        data: opts.body,
        timeout: this.cfg.processing.providerTimeoutMs,
        responseType: 'text',
        transformResponse: (x: unknown) => x,
        validateStatus: () => true,
        maxRedirects: 0,
        httpAgent: this.httpAgent,
        httpsAgent: this.httpsAgent,
        decompress: true,
      });
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers ?? {})) if (typeof v === 'string') headers[k.toLowerCase()] = v;
      return { ok: true, status: res.status, body: typeof res.data === 'string' ? res.data : '', headers, latencyMs: latency() };
    } catch (err) {
      const e = err as AxiosError;
      const code = e.code ?? 'ERROR';
      return {
        ok: false,
        reason: `${code}: ${e.message}`,
        notSent: code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN',
        latencyMs: latency(),
      };
    }
  }
}

/** Attempts of one payment lookup (the first included) before the create answers 503. */
export const LOOKUP_ATTEMPTS = 3;
/** Longest wait between lookup attempts; a longer Retry-After ends the attempts (it is honoured, not shortened). */
export const LOOKUP_MAX_WAIT_MS = 2_000;

/**
 * A payment lookup, asked again (at most LOOKUP_ATTEMPTS in all) while the answer is a
 * transient no-answer: a lookup is read-only, so repeating it is always safe, and a
 * merchant's create should not fail with 503 because one answer was lost, cut off or
 * rate limited. Waits 200 ms, then 400 ms, or the provider's Retry-After when it says more.
 */
export async function lookupWithRetries(lookup: () => Promise<PaymentLookup>): Promise<PaymentLookup> {
  let result = await lookup();
  for (let attempt = 1; attempt < LOOKUP_ATTEMPTS; attempt++) {
    if (result.kind !== 'unavailable' || !result.transient) return result;
    const wait = Math.max(100 * 2 ** attempt, result.retryAfterMs ?? 0);
    if (wait > LOOKUP_MAX_WAIT_MS) return result;
    await new Promise((resolve) => setTimeout(resolve, wait));
    result = await lookup();
  }
  return result;
}

/** Parses Retry-After (seconds or HTTP date) into milliseconds. */
export function retryAfterMs(header: string | undefined): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header)) return Number(header) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
