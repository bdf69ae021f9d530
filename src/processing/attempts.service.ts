import { Injectable, Logger, Optional } from '@nestjs/common';
import { MetricsService } from '../metrics/metrics.service.js';
import { AppConfig } from '../config/config.js';
import { Database } from '../database/database.js';
import type { CallRecord, ProviderActionResult, ProviderOutcome, ProviderResult } from '../providers/provider.js';

/**
 * Records every provider call in refund_attempts: a row written before the call (so a
 * crash mid-call leaves a trace with the provider request id) and completed after it.
 */
@Injectable()
export class AttemptsService {
  private readonly logger = new Logger('Attempts');

  constructor(
    private readonly db: Database,
    private readonly cfg: AppConfig,
    @Optional() private readonly metrics?: MetricsService,
  ) {}

  /** A refund or query call, labelled by its classified outcome. */
  record(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<ProviderResult>,
  ): Promise<ProviderResult> {
    return this.run(refund, providerRequestId, operation, call, (r) => ({ label: outcomeLabel(r.outcome), call: r.call, extra: r.extraCalls }), (err) => ({
      outcome: { kind: 'unknown', reason: `adapter error: ${err.message}` },
      call: { operation, httpStatus: null, providerCode: null, latencyMs: 0, errorMessage: err.message },
    }));
  }

  /** An update or cancel call, labelled done / refused / unknown. */
  recordAction(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<ProviderActionResult>,
  ): Promise<ProviderActionResult> {
    return this.run(refund, providerRequestId, operation, call, (r) => ({ label: r.outcome, call: r.call }), (err) => ({
      outcome: 'unknown',
      message: `adapter error: ${err.message}`,
      call: { operation, httpStatus: null, providerCode: null, latencyMs: 0, errorMessage: err.message },
    }));
  }

  private async run<T>(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<T>,
    describe: (result: T) => { label: string; call: CallRecord; extra?: CallRecord[] },
    onThrow: (err: Error) => T,
  ): Promise<T> {
    const refundId = refund.id;
    const [attempt] = await this.db.query<{ id: string }>(
      // A held lease is renewed before each call, so a step of several calls keeps it throughout.
      `WITH n AS (UPDATE refunds SET attempt_count = attempt_count + 1,
                         lease_until = CASE WHEN lease_until IS NULL THEN NULL
                                            ELSE now() + make_interval(secs => $4::double precision / 1000) END
                   WHERE id = $1 RETURNING attempt_count)
       INSERT INTO refund_attempts (refund_id, number, provider_request_id, operation, outcome)
       SELECT $1, attempt_count, $2, $3, 'in_flight' FROM n RETURNING id`,
      [refundId, providerRequestId, operation, this.cfg.processing.leaseMs],
    );
    let result: T;
    try {
      result = await call();
    } catch (err) {
      // An adapter bug must not look like an answer: it is recorded as an unknown outcome.
      this.logger.error({ refundId, operation, err }, 'adapter threw');
      result = onThrow(err as Error);
    }
    const { label, call: rec, extra } = describe(result);
    for (const c of [rec, ...(extra ?? [])]) {
      this.metrics?.providerCalls.observe(
        { provider: refund.provider, operation: c.operation, outcome: c.outcome ?? label },
        c.latencyMs / 1000,
      );
    }
    await this.db.query(
      `UPDATE refund_attempts SET outcome = $2, http_status = $3, provider_code = $4, error_message = $5,
              latency_ms = $6, completed_at = now()
        WHERE id = $1`,
      [attempt.id, label, rec.httpStatus, rec.providerCode, rec.errorMessage?.slice(0, 1000) ?? null, rec.latencyMs],
    );
    for (const more of extra ?? []) {
      await this.db.query(
        `WITH n AS (UPDATE refunds SET attempt_count = attempt_count + 1 WHERE id = $1 RETURNING attempt_count)
         INSERT INTO refund_attempts (refund_id, number, provider_request_id, operation, outcome, http_status,
                                      provider_code, error_message, latency_ms, completed_at)
         SELECT $1, attempt_count, $2, $3, $4, $5, $6, $7, $8, now() FROM n`,
        [refundId, providerRequestId, more.operation, more.outcome ?? label, more.httpStatus, more.providerCode, more.errorMessage?.slice(0, 1000) ?? null, more.latencyMs],
      );
    }
    return result;
  }
}

export function outcomeLabel(outcome: ProviderOutcome): string {
  switch (outcome.kind) {
    case 'final':
      return outcome.status;
    case 'pending':
      return outcome.status === 'requires_action' ? 'requires_action' : 'pending';
    default:
      return outcome.kind;
  }
}
