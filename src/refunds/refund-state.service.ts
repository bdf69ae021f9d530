import { Injectable, Logger, Optional } from '@nestjs/common';
import { MetricsService } from '../metrics/metrics.service.js';
import { failureCategory } from './failure-category.js';
import type { Sql } from '../database/database.js';
import { RefundRow } from './refund.row.js';
import { isFinal, RefundStatus, sourcesOf, TERMINAL_STATUSES } from './refund-status.js';

/** Column changes that may accompany a status change. */
export interface RefundPatch {
  provider_refund_id?: string | null;
  provider_status?: string | null;
  provider_state?: RefundRow['provider_state'];
  provider_request_id?: string | null;
  refunded_amount?: string;
  failure_code?: string | null;
  failure_category?: 'retryable' | 'final' | null;
  failure_message?: string | null;
  /** Merged (jsonb ||) into provider_details, never replacing it. */
  provider_details?: Record<string, unknown>;
  next_check_at?: Date | null;
  check_count?: number;
}

const PATCH_COLUMNS = [
  'provider_refund_id',
  'provider_status',
  'provider_state',
  'provider_request_id',
  'refunded_amount',
  'failure_code',
  'failure_category',
  'failure_message',
  'next_check_at',
  'check_count',
] as const;

/**
 * The only writer of refunds.status. A transition is one conditional UPDATE
 * (`WHERE status = ANY(<allowed sources>)`) plus an event row in the same transaction,
 * so concurrent writers (worker, webhook, ops) cannot both win, and a late provider
 * answer cannot move a refund backwards or out of a final status.
 */
@Injectable()
export class RefundStateService {
  private readonly logger = new Logger('RefundState');

  constructor(@Optional() private readonly metrics?: MetricsService) {}

  /**
   * Moves the refund to `to` if its current status is one of `from` (default: every status
   * the state machine allows to reach `to`). Returns the updated row, or null when the
   * refund was not in an allowed status (someone else moved it first).
   */
  async transition(
    tx: Sql,
    refundId: string,
    to: RefundStatus,
    opts: {
      from?: RefundStatus[];
      patch?: RefundPatch;
      actor: string;
      detail?: Record<string, unknown>;
      /** Move only while the refund's current submission is this provider request id. */
      requestId?: string;
      /**
       * Further data-modifying CTEs to run in the same statement (e.g. completing the attempt
       * row of the call whose answer this is): given the parameter list, each returns
       * `name AS (...)` and appends its own parameters. They run whether or not the refund moves.
       */
      alsoRun?: Array<(params: unknown[]) => string>;
      /** Further SET clauses of the refund's UPDATE (alias `r`), appending their own parameters. */
      alsoSet?: (params: unknown[]) => string[];
      /** Further output columns, SQL over the CTEs, returned on the row (e.g. an id an alsoRun CTE wrote). */
      alsoSelect?: string;
    },
  ): Promise<RefundRow | null> {
    const allowed = sourcesOf(to);
    const from = opts.from ? opts.from.filter((s) => allowed.includes(s)) : allowed;
    if (from.length === 0) throw new Error(`no allowed transition to ${to} from ${opts.from?.join(',')}`);
    const patch = { ...opts.patch };
    if (to === 'succeeded') {
      // refunded_amount = amount is set in SQL below; a final success always refunds the full amount.
      delete patch.refunded_amount;
    } else if (to !== 'partially_succeeded') {
      patch.refunded_amount = '0';
    }
    if (isFinal(to)) patch.next_check_at = null;
    if (to === 'failed') patch.failure_category = failureCategory(patch.failure_code);
    if (to === 'queued') {
      // Back in line (approval or ops retry): a fresh submission, due now.
      patch.failure_code = patch.failure_code ?? null;
      patch.failure_message = patch.failure_message ?? null;
      patch.failure_category = null;
      patch.next_check_at = patch.next_check_at ?? new Date();
    }

    const params: unknown[] = [refundId, to, from];
    const sets = [`status = $2`, `updated_at = now()`, `status_changed_at = now()`];
    sets.push(isFinal(to) ? `completed_at = now()` : `completed_at = NULL`);
    // A refund in a status nothing leaves is never claimed again, so a worker's lease on it
    // means nothing: clearing it here saves the worker its release statement. A worker still
    // mid-step (a webhook won) writes only under status conditions that no longer hold. Not
    // for `failed`: an ops retry can put it back in line while a worker's step on it is still
    // running, and that step's lease must keep a second worker off until it ends.
    if (TERMINAL_STATUSES.includes(to)) sets.push(`lease_owner = NULL`, `lease_until = NULL`);
    if (to === 'succeeded') sets.push(`refunded_amount = amount`);
    this.addPatch(patch, sets, params);
    if (opts.alsoSet) sets.push(...opts.alsoSet(params));

    // The status change, its event and the event's outbox entry in one statement (one round
    // trip): the event is written exactly when the change is (the CTEs read the UPDATE's rows).
    let onlyRequest = '';
    if (opts.requestId !== undefined) {
      params.push(opts.requestId);
      onlyRequest = ` AND prev.provider_request_id = $${params.length}::text`;
    }
    const also = (opts.alsoRun ?? []).map((cte) => `, ${cte(params)}`).join('');
    params.push(opts.actor, opts.detail ?? {});
    const [row] = await tx.query<RefundRow & { previous_status: RefundStatus }>(
      `WITH prev AS (SELECT id, status, provider_request_id FROM refunds WHERE id = $1 FOR UPDATE),
       u AS (UPDATE refunds r SET ${sets.join(', ')}
             FROM prev WHERE r.id = prev.id AND prev.status = ANY($3::text[])${onlyRequest}
             RETURNING r.*, prev.status AS previous_status),
       e AS (INSERT INTO refund_events (refund_id, from_status, to_status, actor, detail)
             SELECT id, previous_status, $2::text, $${params.length - 1}::text, $${params.length}::jsonb FROM u RETURNING id),
       o AS (INSERT INTO refund_event_outbox (event_id) SELECT id FROM e)${also}
       SELECT u.*${opts.alsoSelect ? `, ${opts.alsoSelect}` : ''} FROM u`,
      params,
    );
    if (!row) return null;
    this.metrics?.transitions.inc({ provider: row.provider, from: row.previous_status, to });
    if (isFinal(to)) this.logger.log({ refundId, from: row.previous_status, to, actor: opts.actor }, 'refund final');
    const { previous_status: _ignored, ...rest } = row;
    return rest as RefundRow;
  }

  /** Updates provider facts without a status change, only while the refund is in `status`. */
  async update(tx: Sql, refundId: string, status: RefundStatus[], patch: RefundPatch): Promise<RefundRow | null> {
    const params: unknown[] = [refundId, status];
    const sets = [`updated_at = now()`];
    this.addPatch(patch, sets, params);
    const [row] = await tx.query<RefundRow>(
      `UPDATE refunds SET ${sets.join(', ')} WHERE id = $1 AND status = ANY($2::text[]) RETURNING *`,
      params,
    );
    return row ?? null;
  }

  /** Records the creation of a refund (no previous status). */
  async created(tx: Sql, refundId: string, status: RefundStatus, actor: string): Promise<void> {
    await this.recordEvent(tx, refundId, null, status, actor, {});
  }

  /**
   * The event row and its outbox entry, in the caller's transaction: a merchant webhook is
   * emitted for exactly the status changes that commit (refunds-api.md §10).
   */
  private async recordEvent(
    tx: Sql,
    refundId: string,
    from: RefundStatus | null,
    to: RefundStatus,
    actor: string,
    detail: Record<string, unknown>,
  ): Promise<void> {
    await tx.query(
      `WITH e AS (INSERT INTO refund_events (refund_id, from_status, to_status, actor, detail)
                  VALUES ($1, $2, $3, $4, $5) RETURNING id)
       INSERT INTO refund_event_outbox (event_id) SELECT id FROM e`,
      [refundId, from, to, actor, detail],
    );
  }

  private addPatch(patch: RefundPatch, sets: string[], params: unknown[]): void {
    for (const col of PATCH_COLUMNS) {
      if (patch[col] === undefined) continue;
      params.push(patch[col]);
      sets.push(`${col} = $${params.length}`);
    }
    if (patch.provider_details && Object.keys(patch.provider_details).length > 0) {
      params.push(patch.provider_details);
      sets.push(`provider_details = provider_details || $${params.length}::jsonb`);
    }
  }
}
