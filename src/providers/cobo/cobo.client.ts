import { Injectable, Logger, Optional } from '@nestjs/common';
import { AppConfig } from '../../config/config.js';
import { SandboxCredentials } from '../../sandbox/sandbox-credentials.js';
import { ProviderHttp, retryAfterMs } from '../provider-http.js';
import { coboHeaders, verifyCoboResponse } from './cobo.signing.js';
import { isAuthError } from './cobo.transformers.js';

export interface CoboCredentials {
  baseUrl: string;
  apiPrivateKey: string;
  publicKey: string;
}

export type CoboCall =
  /** A signed, verified answer. `ok` = 2xx. */
  | {
      kind: 'answer';
      ok: boolean;
      httpStatus: number;
      body: Record<string, unknown>;
      errorCode?: string;
      message?: string;
      /** Retry-After of an error answer (a signed 429), in ms. */
      retryAfterMs?: number;
      latencyMs: number;
    }
  /** No trustworthy answer: transport failure, 5xx without body, missing or wrong signature, not JSON. */
  | { kind: 'no_answer'; reason: string; httpStatus: number | null; notSent: boolean; retryAfterMs?: number; latencyMs: number };

/** HTTP statuses the Python SDK accepts unsigned (proxies and rate limiters answer them). */
const UNSIGNED_OK = new Set([414, 429, 502, 503]);

/**
 * Transport for Cobo WaaS 2.0: Ed25519-signed requests over the full path as sent (the base
 * URL may carry a prefix), and verification of Cobo's response signature. An unsigned or
 * badly signed answer is never trusted: it is reported as no answer (outcome unknown).
 */
@Injectable()
export class CoboClient {
  private readonly logger = new Logger('CoboClient');

  constructor(
    private readonly cfg: AppConfig,
    private readonly http: ProviderHttp,
    @Optional() private readonly sandbox?: SandboxCredentials,
  ) {}

  isEnabled(): boolean {
    return this.cfg.cobo.apiPrivateKey !== undefined || this.cfg.sandbox;
  }

  async credentials(): Promise<CoboCredentials> {
    if (this.cfg.cobo.apiPrivateKey) {
      return { baseUrl: this.cfg.cobo.baseUrl, apiPrivateKey: this.cfg.cobo.apiPrivateKey, publicKey: this.cfg.cobo.publicKey };
    }
    if (this.cfg.sandbox && this.sandbox) {
      const c = await this.sandbox.cobo();
      return { baseUrl: `${this.cfg.sandboxUrl}/cobo/v2`, apiPrivateKey: c.apiPrivateKey, publicKey: c.coboPublicKey };
    }
    throw new Error('Cobo is not configured');
  }

  /** The key that signs Cobo's webhooks (same as its responses). */
  async webhookPublicKey(): Promise<string> {
    return (await this.credentials()).publicKey;
  }

  async request(method: 'GET' | 'POST' | 'PUT', path: string, query: URLSearchParams | null, body?: string): Promise<CoboCall> {
    const creds = await this.credentials();
    const qs = query ? query.toString() : '';
    const url = `${creds.baseUrl}${path}${qs ? `?${qs}` : ''}`;
    // The signed path is the full pathname as sent, prefix included (contract §5).
    const signedPath = new URL(url).pathname;
    const res = await this.http.request({
      method,
      url,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...coboHeaders(creds.apiPrivateKey, method, signedPath, qs, body ?? ''),
      },
      body,
    });
    if (!res.ok) return { kind: 'no_answer', reason: res.reason, httpStatus: null, notSent: res.notSent, latencyMs: res.latencyMs };

    const timestamp = res.headers['biz-timestamp'];
    const signature = res.headers['biz-resp-signature'];
    const signed = timestamp !== undefined && signature !== undefined && verifyCoboResponse(creds.publicKey, res.body, timestamp, signature);
    if (!signed) {
      if (res.status === 429) {
        return { kind: 'no_answer', reason: 'HTTP 429', httpStatus: 429, notSent: true, retryAfterMs: retryAfterMs(res.headers['retry-after']) ?? 1000, latencyMs: res.latencyMs };
      }
      if (!UNSIGNED_OK.has(res.status)) {
        this.logger.warn({ path, httpStatus: res.status, hasSignature: signature !== undefined }, 'Cobo answer not signed by Cobo; not trusted');
      }
      return { kind: 'no_answer', reason: `unverified answer (HTTP ${res.status})`, httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body);
    } catch {
      return { kind: 'no_answer', reason: 'malformed JSON', httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return { kind: 'no_answer', reason: 'answer is not an object', httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    const obj = parsed as Record<string, unknown>;
    const ok = res.status >= 200 && res.status < 300;
    const errorCode = ok || obj.error_code === undefined ? undefined : String(obj.error_code);
    if (isAuthError(errorCode)) {
      // Our key or signing is wrong: every call fails until configuration is fixed.
      this.logger.error({ path, errorCode, message: obj.error_message }, 'Cobo rejected our authentication');
    }
    return {
      kind: 'answer',
      ok,
      httpStatus: res.status,
      body: obj,
      errorCode,
      message: typeof obj.error_message === 'string' ? obj.error_message : undefined,
      ...(!ok && res.headers['retry-after'] !== undefined ? { retryAfterMs: retryAfterMs(res.headers['retry-after']) } : {}),
      latencyMs: res.latencyMs,
    };
  }
}
