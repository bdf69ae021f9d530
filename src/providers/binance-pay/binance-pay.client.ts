import { Injectable, Logger, Optional } from '@nestjs/common';
import { parse } from 'lossless-json';
import { AppConfig } from '../../config/config.js';
import { SandboxCredentials } from '../../sandbox/sandbox-credentials.js';
import { HttpAnswer, HttpFailure, ProviderHttp, retryAfterMs } from '../provider-http.js';
import { binanceHeaders } from './binance-pay.signing.js';
import type { BinanceEnvelope } from './binance-pay.transformers.js';

export interface BinanceCredentials {
  baseUrl: string;
  apiKey: string;
  secretKey: string;
}

export type BinanceCall =
  | { kind: 'envelope'; envelope: BinanceEnvelope; http: HttpAnswer }
  /** No usable answer: transport failure, 5xx, 429, or a body that is not JSON. */
  | { kind: 'no_answer'; reason: string; httpStatus: number | null; notSent: boolean; retryAfterMs?: number; latencyMs: number };

/**
 * Transport for the Binance Pay merchant API: signing and HTTP. Same code in live and
 * sandbox mode; only the base URL and credentials differ.
 */
@Injectable()
export class BinancePayClient {
  private readonly logger = new Logger('BinancePayClient');

  constructor(
    private readonly cfg: AppConfig,
    private readonly http: ProviderHttp,
    @Optional() private readonly sandbox?: SandboxCredentials,
  ) {}

  isEnabled(): boolean {
    return this.cfg.binancePay !== undefined || this.cfg.sandbox;
  }

  async credentials(): Promise<BinanceCredentials> {
    if (this.cfg.binancePay) return this.cfg.binancePay;
    if (this.cfg.sandbox && this.sandbox) {
      const creds = await this.sandbox.binancePay();
      return { baseUrl: `${this.cfg.sandboxUrl}/binance-pay`, ...creds };
    }
    throw new Error('Binance Pay is not configured');
  }

  /**
   * The URL Binance should send this refund's webhook to. A live Binance is told one only
   * when PUBLIC_URL is set (otherwise the dashboard's URL applies; a loopback default would
   * override it with an address Binance cannot reach).
   */
  webhookUrl(): string | undefined {
    if (this.cfg.binancePay && !this.cfg.publicUrlExplicit) return undefined;
    return `${this.cfg.publicUrl}/webhooks/binance-pay`;
  }

  async post(path: string, body: string): Promise<BinanceCall> {
    const creds = await this.credentials();
    const res = await this.http.request({
      method: 'POST',
      url: `${creds.baseUrl}${path}`,
      headers: binanceHeaders(creds.apiKey, creds.secretKey, body),
      body,
    });
    return this.interpret(res, path);
  }

  private interpret(res: HttpAnswer | HttpFailure, path: string): BinanceCall {
    if (!res.ok) {
      return { kind: 'no_answer', reason: res.reason, httpStatus: null, notSent: res.notSent, latencyMs: res.latencyMs };
    }
    if (res.status === 429 || res.status >= 500) {
      return {
        kind: 'no_answer',
        reason: `HTTP ${res.status}`,
        httpStatus: res.status,
        notSent: false,
        retryAfterMs: res.status === 429 ? (retryAfterMs(res.headers['retry-after']) ?? 1000) : undefined,
        latencyMs: res.latencyMs,
      };
    }
    let parsed: unknown;
    try {
      // Lossless: 19-digit ids stay exact and amounts keep their decimal text.
      parsed = parse(res.body);
    } catch {
      this.logger.warn({ path, httpStatus: res.status }, 'Binance answer is not JSON');
      return { kind: 'no_answer', reason: 'malformed JSON', httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return { kind: 'no_answer', reason: 'answer is not an object', httpStatus: res.status, notSent: false, latencyMs: res.latencyMs };
    }
    const env = parsed as Record<string, unknown>;
    const code = env.code === undefined || env.code === null ? undefined : String(env.code);
    if (code === '400002' || code === '400004' || code === '400005') {
      // Our credentials or signing are wrong: every call will fail until someone fixes config.
      this.logger.error({ path, code, errorMessage: env.errorMessage }, 'Binance Pay rejected our authentication');
    }
    return {
      kind: 'envelope',
      envelope: {
        status: typeof env.status === 'string' ? env.status : undefined,
        code,
        data: env.data,
        errorMessage: typeof env.errorMessage === 'string' ? env.errorMessage : null,
      },
      http: res,
    };
  }
}
