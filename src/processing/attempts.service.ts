import { Injectable, Logger, Optional } from '@nestjs/common';
import { MetricsService } from '../metrics/metrics.service.js';
import { AppConfig } from '../config/config.js';
import { Database } from '../database/database.js';
import type { Sql } from '../database/database.js';
import { Batcher, batchLimits, oneItemMayHaveFailed } from '../common/batcher.js';
import type { CallRecord, ProviderActionResult, ProviderOutcome, ProviderResult } from '../providers/provider.js';
import { ItemColumns, type ItemColumn, type TransitionOptions } from '../refunds/refund-state.service.js';

/**
 * Records every provider call in refund_attempts: a row written before the call (so a
 * crash mid-call leaves a trace with the provider request id) and completed after it.
 */
@Injectable()
export class AttemptsService {
  private readonly logger = new Logger('Attempts');

  /** Attempt rows written before their calls, many calls' rows per statement under load (startMany()). */
  private readonly starts: Batcher<AttemptStart, { id: string } | undefined>;

  constructor(
    private readonly db: Database,
    private readonly cfg: AppConfig,
    @Optional() private readonly metrics?: MetricsService,
  ) {
    this.starts = new Batcher((items) => this.startMany(items), {
      ...batchLimits(this.cfg.processing.batchSize),
      // One refund's rows are numbered from its attempt_count: one per refund per statement.
      keyOf: (a) => a.refundId,
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.workerBatchSize.observe({ statement: 'attempt' }, n),
      onSplit: () => this.metrics?.workerBatchSplits.inc({ statement: 'attempt' }),
    });
  }

  /**
   * The `in_flight` rows of calls about to start, numbered from each refund's attempt_count.
   * A held lease is renewed before each call, so a step of several calls keeps it throughout.
   * The refund rows are updated in id order, so two such statements cannot deadlock.
   */
  private async startMany(items: AttemptStart[]): Promise<Array<{ id: string } | undefined>> {
    const rows = await this.db.query<{ id: string; refund_id: string }>(
      `WITH i AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS i(refund_id, request_id, operation)),
       l AS (SELECT r.id FROM refunds r JOIN i ON i.refund_id = r.id ORDER BY r.id FOR UPDATE OF r),
       n AS (UPDATE refunds r SET attempt_count = r.attempt_count + 1,
                    lease_until = CASE WHEN r.lease_until IS NULL THEN NULL
                                       ELSE now() + make_interval(secs => $4::double precision / 1000) END
               FROM l WHERE r.id = l.id RETURNING r.id, r.attempt_count)
       INSERT INTO refund_attempts (refund_id, number, provider_request_id, operation, outcome)
       SELECT n.id, n.attempt_count, i.request_id, i.operation, 'in_flight' FROM n JOIN i ON i.refund_id = n.id
       RETURNING id, refund_id`,
      [items.map((a) => a.refundId), items.map((a) => a.providerRequestId), items.map((a) => a.operation), this.cfg.processing.leaseMs],
    );
    const byRefund = new Map(rows.map((r) => [r.refund_id, { id: r.id }]));
    return items.map((a) => byRefund.get(a.refundId));
  }

  /**
   * For status changes that start a call (RefundStateService.transitionMany()): its options
   * that count the attempt, renew a held lease and write each moved refund's `in_flight` row
   * for its provider request id (as the move set it) in that same statement, one round trip
   * fewer than startMany(). Each row's id comes back on its refund's row as
   * `started_attempt_id`, for recordDeferred()'s `started`. The refund rows are locked by
   * the transition, so the numbers are their own, as under startMany()'s lock.
   */
  startWithTransition(operation: string): Pick<TransitionOptions, 'alsoSet' | 'alsoRun' | 'alsoSelect'> {
    return {
      alsoSet: (params) => {
        params.push(this.cfg.processing.leaseMs);
        return [
          `attempt_count = r.attempt_count + 1`,
          `lease_until = CASE WHEN r.lease_until IS NULL THEN NULL ELSE now() + make_interval(secs => $${params.length}::double precision / 1000) END`,
        ];
      },
      alsoRun: [
        (params) => {
          params.push(operation);
          return `attempt_start AS (INSERT INTO refund_attempts (refund_id, number, provider_request_id, operation, outcome)
                    SELECT u.id, u.attempt_count, u.provider_request_id, $${params.length}::text, 'in_flight' FROM u RETURNING id, refund_id)`;
        },
      ],
      alsoSelect: `(SELECT s.id FROM attempt_start s WHERE s.refund_id = u.id) AS started_attempt_id`,
    };
  }

  /**
   * The completions of many items' calls (none for an item whose entry is undefined), for a
   * batched statement: columns of its items CTE `i`, and the CTE that writes them, which
   * runs whether or not the refunds move.
   */
  completionsMany(completions: Array<AttemptCompletion | undefined>): Required<Pick<TransitionOptions, 'columns' | 'alsoRun'>> {
    const col = <T>(name: string, type: string, value: (c: AttemptCompletion) => T): ItemColumn => ({
      name,
      type,
      values: completions.map((c) => (c ? value(c) : null)),
    });
    return {
      columns: [
        col('a_id', 'bigint', (c) => c.attemptId),
        col('a_outcome', 'text', (c) => c.label),
        col('a_http', 'int', (c) => c.call.httpStatus),
        col('a_code', 'text', (c) => c.call.providerCode),
        col('a_error', 'text', (c) => c.call.errorMessage?.slice(0, 1000) ?? null),
        col('a_latency', 'int', (c) => Math.round(c.call.latencyMs)),
      ],
      alsoRun: [
        () => `attempt_done AS (UPDATE refund_attempts a SET outcome = i.a_outcome, http_status = i.a_http, provider_code = i.a_code,
                 error_message = i.a_error, latency_ms = i.a_latency, completed_at = now() FROM i WHERE a.id = i.a_id)`,
      ],
    };
  }

  /** A refund or query call, labelled by its classified outcome; its attempt row is complete on return. */
  async record(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<ProviderResult>,
  ): Promise<ProviderResult> {
    const { result, completion } = await this.recordDeferred(refund, providerRequestId, operation, call);
    await this.complete(this.db, completion);
    return result;
  }

  /**
   * Like record(), but the attempt row's completion is returned instead of written: the
   * caller writes it in its next statement (completionsMany()), saving a round trip per call,
   * or with complete(). Until then the row says `in_flight`, as after a crash mid-call, which
   * every reader already treats as "may have reached the provider".
   */
  recordDeferred(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<ProviderResult>,
    /** The call's in_flight row, when the statement before it wrote it (startWithTransition()). */
    started?: { id: string },
  ): Promise<{ result: ProviderResult; completion: AttemptCompletion }> {
    return this.run(
      refund,
      providerRequestId,
      operation,
      call,
      (r) => ({ label: outcomeLabel(r.outcome), call: r.call, extra: r.extraCalls }),
      (err) => ({
        outcome: { kind: 'unknown', reason: `adapter error: ${err.message}` },
        call: { operation, httpStatus: null, providerCode: null, latencyMs: 0, errorMessage: err.message },
      }),
      started,
    );
  }

  /** An update or cancel call, labelled done / refused / unknown. */
  async recordAction(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<ProviderActionResult>,
  ): Promise<ProviderActionResult> {
    const { result, completion } = await this.run<ProviderActionResult>(refund, providerRequestId, operation, call, (r) => ({ label: r.outcome, call: r.call }), (err) => ({
      outcome: 'unknown',
      message: `adapter error: ${err.message}`,
      call: { operation, httpStatus: null, providerCode: null, latencyMs: 0, errorMessage: err.message },
    }));
    await this.complete(this.db, completion);
    return result;
  }

  /**
   * Runs a statement that carries the completion (completionsMany()). Should it fail, the
   * completion is written on its own before the error goes on, so the call's answer (status,
   * provider code, error) is not lost with it; best effort, the database may be away.
   */
  async carrying<T>(c: AttemptCompletion | undefined, statement: () => Promise<T>): Promise<T> {
    try {
      return await statement();
    } catch (err) {
      if (c) await this.complete(this.db, c).catch(() => undefined);
      throw err;
    }
  }

  /** Writes a completion on its own (and the rows of any extra calls). */
  async complete(sql: Sql, c: AttemptCompletion): Promise<void> {
    const { columns, alsoRun } = this.completionsMany([c]);
    const cols = new ItemColumns(1);
    for (const col of columns) cols.add(col.name, col.type, col.values);
    const params: unknown[] = [];
    await sql.query(`WITH ${cols.cte(params)}, ${alsoRun.map((cte) => cte(params)).join(', ')} SELECT 1`, params);
    await this.completeExtras(sql, c);
  }

  /**
   * The rows of a step's further calls (Lean: create, then approve). Rare, so written one by
   * one after the statement that completed the first call.
   */
  async completeExtras(sql: Sql, c: AttemptCompletion): Promise<void> {
    for (const more of c.extra) {
      await sql.query(
        `WITH n AS (UPDATE refunds SET attempt_count = attempt_count + 1 WHERE id = $1 RETURNING attempt_count)
         INSERT INTO refund_attempts (refund_id, number, provider_request_id, operation, outcome, http_status,
                                      provider_code, error_message, latency_ms, completed_at)
         SELECT $1, attempt_count, $2, $3, $4, $5, $6, $7, $8, now() FROM n`,
        [c.refundId, c.providerRequestId, more.operation, more.outcome ?? c.label, more.httpStatus, more.providerCode, more.errorMessage?.slice(0, 1000) ?? null, more.latencyMs],
      );
    }
  }

  private async run<T>(
    refund: { id: string; provider: string },
    providerRequestId: string,
    operation: string,
    call: () => Promise<T>,
    describe: (result: T) => { label: string; call: CallRecord; extra?: CallRecord[] },
    onThrow: (err: Error) => T,
    started?: { id: string },
  ): Promise<{ result: T; completion: AttemptCompletion }> {
    const refundId = refund.id;
    const attempt = started ?? (await this.starts.submit({ refundId, providerRequestId, operation }));
    if (!attempt) throw new Error(`refund ${refundId} not found for its attempt row`);
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
    return { result, completion: { attemptId: attempt.id, refundId, providerRequestId, label, call: rec, extra: extra ?? [] } };
  }
}

interface AttemptStart {
  refundId: string;
  providerRequestId: string;
  operation: string;
}

/** How a provider call ended, to be written into its in_flight attempt row. */
export interface AttemptCompletion {
  attemptId: string;
  refundId: string;
  providerRequestId: string;
  label: string;
  call: CallRecord;
  extra: CallRecord[];
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
