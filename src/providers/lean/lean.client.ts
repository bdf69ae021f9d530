import { Injectable, Logger, Optional } from '@nestjs/common';
import { parse } from 'lossless-json';
import { AppConfig } from '../../config/config.js';
import { LeanSandboxCredentials } from '../../sandbox/lean/lean.credentials.js';
import { HttpAnswer, HttpFailure, ProviderHttp, retryAfterMs } from '../provider-http.js';

export interface LeanCredentials {
  baseUrl: string;
  authUrl: string;
  clientId: string;
  clientSecret: string;
  webhookSecret?: string;
}

export type LeanCall =
  | { kind: 'answer'; ok: boolean; httpStatus: number; body: unknown; errorStatus?: string; message?: string; latencyMs: number }
  | { kind: 'no_answer'; reason: string; httpStatus: number | null; notSent: boolean; retryAfterMs?: number; latencyMs: number };

/** Refresh this long before the token's expiry, so no call goes out with a token about to die. */
const REFRESH_MARGIN_MS = 60_000;

interface CachedToken {
  token: string;
  expiresAt: number;
}

/**
 * Transport for Lean: OAuth2 client-credentials tokens (cached until shortly before
 * expiry, one refresh in flight however many callers ask, one transparent retry with a
 * fresh token on 401) and JSON calls parsed losslessly (amounts are JSON numbers).
 */
@Injectable()
export class LeanClient {
  private readonly logger = new Logger('LeanClient');
  private cached?: CachedToken;
  private refreshing?: Promise<CachedToken>;
  /** Tokens fetched by this process (exposed for tests and metrics). */
  tokensFetched = 0;

  constructor(
    private readonly cfg: AppConfig,
    private readonly http: ProviderHttp,
    @Optional() private readonly sandbox?: LeanSandboxCredentials,
  ) {}

  isEnabled(): boolean {
    return (this.cfg.lean.clientId !== undefined && this.cfg.lean.clientSecret !== undefined) || this.cfg.sandbox;
  }

  async credentials(): Promise<LeanCredentials> {
    const l = this.cfg.lean;
    if (l.clientId && l.clientSecret) {
      return { baseUrl: l.baseUrl, authUrl: l.authUrl, clientId: l.clientId, clientSecret: l.clientSecret, webhookSecret: l.webhookSecret };
    }
    if (this.cfg.sandbox && this.sandbox) {
      const c = await this.sandbox.lean();
      return { baseUrl: `${this.cfg.sandboxUrl}/lean`, authUrl: `${this.cfg.sandboxUrl}/lean-auth`, ...c };
    }
    throw new Error('Lean is not configured');
  }

  /** A valid access token, fetching one only when none is cached or it is about to expire. */
  async token(): Promise<string> {
    if (this.cached && this.cached.expiresAt - REFRESH_MARGIN_MS > Date.now()) return this.cached.token;
    this.refreshing ??= this.fetchToken().finally(() => (this.refreshing = undefined));
    return (await this.refreshing).token;
  }

  /** Drops `token` if it is still the cached one (a 401 said it is no good). */
  private invalidate(token: string): void {
    if (this.cached?.token === token) this.cached = undefined;
  }

  private async fetchToken(): Promise<CachedToken> {
    const c = await this.credentials();
    const form = new URLSearchParams({ client_id: c.clientId, client_secret: c.clientSecret, grant_type: 'client_credentials', scope: 'api' });
    const res = await this.http.request({
      method: 'POST',
      url: `${c.authUrl}/oauth2/token`,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
    if (!res.ok) throw new Error(`Lean token endpoint unreachable: ${res.reason}`);
    let body: { access_token?: unknown; expires_in?: unknown } = {};
    try {
      body = JSON.parse(res.body);
    } catch {
      // fall through to the check below
    }
    if (res.status !== 200 || typeof body.access_token !== 'string') {
      if (res.status === 401 || res.status === 400) this.logger.error({ httpStatus: res.status }, 'Lean refused our client credentials');
      throw new Error(`Lean token request failed (HTTP ${res.status})`);
    }
    const ttl = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in * 1000 : 3_599_000;
    this.tokensFetched++;
    this.cached = { token: body.access_token, expiresAt: Date.now() + ttl };
    return this.cached;
  }

  async request(method: 'GET' | 'POST' | 'PUT', path: string, query: URLSearchParams | null, body?: string): Promise<LeanCall> {
    const c = await this.credentials();
    const url = `${c.baseUrl}${path}${query && query.toString() ? `?${query.toString()}` : ''}`;
    let token: string;
    try {
      token = await this.token();
    } catch (err) {
      // Without a token nothing was sent: safe to retry later with the same request.
      return { kind: 'no_answer', reason: (err as Error).message, httpStatus: null, notSent: true, latencyMs: 0 };
    }
    let res = await this.send(method, url, token, body);
    if (res.ok && res.status === 401) {
      // One transparent retry with a fresh token (revoked or expired early); Lean did nothing with a 401.
      this.invalidate(token);
      try {
        token = await this.token();
      } catch (err) {
        return { kind: 'no_answer', reason: (err as Error).message, httpStatus: 401, notSent: true, latencyMs: res.latencyMs };
      }
      res = await this.send(method, url, token, body);
    }
    return this.interpret(res);
  }

  private send(method: 'GET' | 'POST' | 'PUT', url: string, token: string, body?: string) {
    return this.http.request({
      method,
      url,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body,
    });
  }

  private interpret(res: HttpAnswer | HttpFailure): LeanCall {
    if (!res.ok) return { kind: 'no_answer', reason: res.reason, httpStatus: null, notSent: res.notSent, latencyMs: res.latencyMs };
    if (res.status === 429) {
      return { kind: 'no_answer', reason: 'HTTP 429', httpStatus: 429, notSent: true, retryAfterMs: retryAfterMs(res.headers['retry-after']) ?? 1000, latencyMs: res.latencyMs };
    }
    let parsed: unknown;
    try {
      parsed = res.body === '' ? null : parse(res.body);
    } catch {
      return { kind: 'no_answer', reason: 'malformed JSON', httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    const ok = res.status >= 200 && res.status < 300;
    if (!ok && res.status >= 500) {
      return { kind: 'no_answer', reason: `HTTP ${res.status}`, httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    const obj = parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
    return {
      kind: 'answer',
      ok,
      httpStatus: res.status,
      body: parsed,
      errorStatus: !ok && typeof obj?.status === 'string' ? obj.status : undefined,
      message: !ok && typeof obj?.message === 'string' ? obj.message : undefined,
      latencyMs: res.latencyMs,
    };
  }
}
