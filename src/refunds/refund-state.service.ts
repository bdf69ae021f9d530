import { Injectable, Logger, Optional } from '@nestjs/common';
import { MetricsService } from '../metrics/metrics.service.js';
import { failureCategory } from './failure-category.js';
import type { Sql } from '../database/database.js';
import { RefundRow } from './refund.row.js';
import { canTransition, FINAL_STATUSES, isFinal, RefundStatus, sourcesOf, TERMINAL_STATUSES } from './refund-status.js';

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
 * answer cannot move a refund backwards or out of a final status. The one move written by
 * another statement, the worker's claim (queued -> processing), is built here too
 * (inlineStart()) and decided on the row that statement holds locked.
 */
@Injectable()
export class RefundStateService {
  private readonly logger = new Logger('RefundState');

  constructor(@Optional() private readonly metrics?: MetricsService) {}

  /**
   * Moves the refund to `to` if its current status is one of `from` (default: every status
   * the state machine allows to reach `to`). Returns the updated row, or null when the
   * refund was not in an allowed status (someone else moved it first). One transition is a
   * batch of one (transitionMany()), so both run the same statement.
   */
  async transition(
    tx: Sql,
    refundId: string,
    to: RefundStatus,
    opts: Omit<TransitionItem, 'refundId' | 'to'> & Omit<TransitionOptions, 'columns'>,
  ): Promise<RefundRow | null> {
    const { from, patch, requestId, detail, ...statement } = opts;
    const [row] = await this.transitionMany(tx, [{ refundId, to, from, patch, requestId, detail }], statement);
    return row ?? null;
  }

  /**
   * Many transitions in one statement (the worker's concurrent steps, batched): each item
   * moves its refund as transition() would, under the same conditions, and gets its event
   * and outbox entry; an item whose refund is not in an allowed status (or is gone) is null
   * in the result, and the others move all the same. The rows are locked in id order, so two
   * such statements cannot deadlock each other. One refund at most once per call.
   */
  async transitionMany(tx: Sql, items: TransitionItem[], opts: TransitionOptions): Promise<Array<RefundRow | null>> {
    const cols = new ItemColumns(items.length);
    const params: unknown[] = [];
    cols.add('id', 'uuid', items.map((it) => it.refundId));
    cols.add('to_status', 'text', items.map((it) => it.to));
    cols.add(
      'from_list',
      'text',
      items.map((it) => {
        const allowed = sourcesOf(it.to);
        const from = it.from ? it.from.filter((s) => allowed.includes(s)) : allowed;
        if (from.length === 0) throw new Error(`no allowed transition to ${it.to} from ${it.from?.join(',')}`);
        // A text[] per item would be a two-dimensional array parameter, which must be
        // rectangular: a list in one text, split in SQL.
        return from.join(',');
      }),
    );
    cols.add('request_id', 'text', items.map((it) => it.requestId ?? null));
    cols.add('detail', 'jsonb', items.map((it) => it.detail ?? {}));
    const sets = [
      `status = i.to_status`,
      `updated_at = now()`,
      `status_changed_at = now()`,
      `completed_at = CASE WHEN i.to_status = ANY('{${FINAL_STATUSES.join(',')}}'::text[]) THEN now() END`,
      // A final success always refunds the full amount.
      `refunded_amount = CASE WHEN i.to_status = 'succeeded' THEN r.amount ELSE COALESCE(i.refunded_amount, r.refunded_amount) END`,
    ];
    if (items.some((it) => TERMINAL_STATUSES.includes(it.to))) {
      // A refund in a status nothing leaves is never claimed again, so a worker's lease on it
      // means nothing: clearing it here saves the worker its release statement. A worker still
      // mid-step (a webhook won) writes only under status conditions that no longer hold. Not
      // for `failed`: an ops retry can put it back in line while a worker's step on it is still
      // running, and that step's lease must keep a second worker off until it ends.
      const terminal = `i.to_status = ANY('{${TERMINAL_STATUSES.join(',')}}'::text[])`;
      sets.push(`lease_owner = CASE WHEN ${terminal} THEN NULL ELSE r.lease_owner END`, `lease_until = CASE WHEN ${terminal} THEN NULL ELSE r.lease_until END`);
    }
    const patches = items.map((it) => normalisedPatch(it.to, it.patch ?? {}));
    // Every non-success sets it ('0', or a partial refund's amount): see normalisedPatch().
    cols.add('refunded_amount', 'numeric', patches.map((p) => p.refunded_amount ?? null));
    sets.push(...patchSets(patches, cols, ['refunded_amount']));
    for (const c of opts.columns ?? []) cols.add(c.name, c.type, c.values);
    const itemsCte = cols.cte(params);
    if (opts.alsoSet) sets.push(...opts.alsoSet(params));
    params.push(opts.actor);
    const actor = `$${params.length}::text`;
    // The status changes, their events and the events' outbox entries in one statement (one
    // round trip): an event is written exactly when its change is (the CTEs read the UPDATE's rows).
    const also = (opts.alsoRun ?? []).map((cte) => `, ${cte(params)}`).join('');
    // One row per refund found: the moved ones with their new values (u.*), the others with
    // u's columns null and what the lock found of them (seen_*), for opts.unmoved.
    const rows = await tx.query<RefundRow & { previous_status: RefundStatus; seen_id: string; seen_status: RefundStatus; seen_request_id: string | null }>(
      `WITH ${itemsCte},
       prev AS (SELECT r.id, r.status, r.provider_request_id FROM refunds r JOIN i ON i.id = r.id ORDER BY r.id FOR UPDATE OF r),
       u AS (UPDATE refunds r SET ${sets.join(', ')}
             FROM prev JOIN i ON i.id = prev.id
             WHERE r.id = prev.id AND prev.status = ANY(string_to_array(i.from_list, ','))
               AND (i.request_id IS NULL OR prev.provider_request_id = i.request_id)
             RETURNING r.*, prev.status AS previous_status),
       e AS (INSERT INTO refund_events (refund_id, from_status, to_status, actor, detail)
             SELECT u.id, u.previous_status, u.status, ${actor}, i.detail FROM u JOIN i ON i.id = u.id RETURNING id),
       o AS (INSERT INTO refund_event_outbox (event_id) SELECT id FROM e)${also}
       SELECT u.*${opts.alsoSelect ? `, ${opts.alsoSelect}` : ''},
              prev.id AS seen_id, prev.status AS seen_status, prev.provider_request_id AS seen_request_id
         FROM prev LEFT JOIN u ON u.id = prev.id`,
      params,
    );
    const byId = new Map<string, RefundRow>();
    for (const row of rows) {
      const { previous_status: from, seen_id, seen_status, seen_request_id, ...rest } = row;
      if (rest.id === null) {
        opts.unmoved?.set(seen_id, { status: seen_status, provider_request_id: seen_request_id });
        continue;
      }
      const to = rest.status as RefundStatus;
      this.metrics?.transitions.inc({ provider: rest.provider, from, to });
      if (isFinal(to)) this.logger.log({ refundId: rest.id, from, to, actor: opts.actor }, 'refund final');
      byId.set(rest.id, rest as RefundRow);
    }
    return items.map((it) => byId.get(it.refundId) ?? null);
  }

  /**
   * The move queued → processing made inside another statement's UPDATE of `refunds` (alias
   * `r`): the worker's claim, which starts a queued refund's create in the statement that
   * leases it when nothing has to be checked between the two (RefundWorkerService.claimMany(),
   * finding 50). It is the one status write outside transitionMany(), so it is built here,
   * to set what transitionMany() sets for startMany()'s move:
   * - `sets(when)`: SET clauses, each applying only where `when` holds (SQL over the
   *   statement's inputs, decided before the update; elsewhere the columns keep their values).
   *   The provider request id is kept if the refund has one, else a fresh one (32 hex
   *   characters, as newProviderRequestId() makes);
   * - `records(moved)`: the CTEs `start_e` and `start_o`, writing an event and its outbox
   *   entry for each refund in `moved` (SQL of a row source with the moved refunds' `id`s);
   * - `count(rows)`: the transitions metric for the moved refunds, once the statement is done.
   */
  inlineStart(actor: 'worker'): {
    sets: (when: string) => string[];
    records: (moved: string) => string;
    count: (rows: Array<{ provider: string }>) => void;
  } {
    if (!canTransition('queued', 'processing')) throw new Error('queued -> processing is not a transition');
    // startMany()'s patch, with what every move to processing implies (normalisedPatch()).
    const patch = normalisedPatch('processing', { provider_state: 'unknown', check_count: 0 });
    const values: Array<[string, string]> = [
      ['status', `'processing'`],
      ['updated_at', 'now()'],
      ['status_changed_at', 'now()'],
      // Not final: as transitionMany() sets it for a move to a status that is not.
      ['completed_at', 'NULL'],
      ['provider_request_id', `COALESCE(r.provider_request_id, replace(gen_random_uuid()::text, '-', ''))`],
      ...PATCH_COLUMNS.filter((col) => patch[col] !== undefined).map((col): [string, string] => [col, `${sqlLiteral(patch[col])}::${PATCH_TYPES[col]}`]),
    ];
    const sets = values.map(([col, value]) => (when: string) => `${col} = CASE WHEN ${when} THEN ${value} ELSE r.${col} END`);
    return {
      sets: (when) => sets.map((s) => s(when)),
      records: (moved) =>
        `start_e AS (INSERT INTO refund_events (refund_id, from_status, to_status, actor, detail)
                     SELECT m.id, 'queued', 'processing', '${actor}', '{}'::jsonb FROM ${moved} m RETURNING id),
         start_o AS (INSERT INTO refund_event_outbox (event_id) SELECT id FROM start_e)`,
      count: (rows) => {
        for (const row of rows) this.metrics?.transitions.inc({ provider: row.provider, from: 'queued', to: 'processing' });
      },
    };
  }

  /**
   * Provider facts and the next check for many refunds, no status change, each only while
   * its refund is in its `status` (the worker's reschedules, batched); locked in id order.
   * Returns which moved.
   */
  async updateMany(
    tx: Sql,
    items: Array<{ refundId: string; status: RefundStatus; patch: RefundPatch }>,
    opts: Omit<TransitionOptions, 'actor' | 'alsoSelect' | 'unmoved'> = {},
  ): Promise<boolean[]> {
    const cols = new ItemColumns(items.length);
    const params: unknown[] = [];
    cols.add('id', 'uuid', items.map((it) => it.refundId));
    cols.add('status', 'text', items.map((it) => it.status));
    const sets = [`updated_at = now()`, ...patchSets(items.map((it) => it.patch), cols)];
    for (const c of opts.columns ?? []) cols.add(c.name, c.type, c.values);
    const itemsCte = cols.cte(params);
    if (opts.alsoSet) sets.push(...opts.alsoSet(params));
    const also = (opts.alsoRun ?? []).map((cte) => `, ${cte(params)}`).join('');
    const rows = await tx.query<{ id: string }>(
      `WITH ${itemsCte},
       l AS (SELECT r.id FROM refunds r JOIN i ON i.id = r.id ORDER BY r.id FOR UPDATE OF r)${also}
       UPDATE refunds r SET ${sets.join(', ')} FROM l JOIN i ON i.id = l.id
        WHERE r.id = l.id AND r.status = i.status RETURNING r.id`,
      params,
    );
    const moved = new Set(rows.map((r) => r.id));
    return items.map((it) => moved.has(it.refundId));
  }

  /** Updates provider facts without a status change, only while the refund is in `status`. */
  async update(tx: Sql, refundId: string, status: RefundStatus[], patch: RefundPatch): Promise<RefundRow | null> {
    const params: unknown[] = [refundId, status];
    const sets = [`updated_at = now()`];
    for (const col of PATCH_COLUMNS) {
      if (patch[col] === undefined) continue;
      params.push(patch[col]);
      sets.push(`${col} = $${params.length}`);
    }
    if (patch.provider_details && Object.keys(patch.provider_details).length > 0) {
      params.push(patch.provider_details);
      sets.push(`provider_details = provider_details || $${params.length}::jsonb`);
    }
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
}

/** One refund's move in transitionMany(). */
export interface TransitionItem {
  refundId: string;
  to: RefundStatus;
  /** Statuses it may move from (default: every status the state machine allows to reach `to`). */
  from?: RefundStatus[];
  patch?: RefundPatch;
  /** Move only while the refund's current submission is this provider request id. */
  requestId?: string;
  detail?: Record<string, unknown>;
}

/** What a transition statement carries besides the moves themselves. */
export interface TransitionOptions {
  actor: string;
  /**
   * Further per-item input columns of the items CTE `i` (one value per item, in order), for
   * the caller's CTEs and SET clauses: e.g. the attempt row each item's call completes.
   */
  columns?: ItemColumn[];
  /**
   * Further data-modifying CTEs to run in the same statement (e.g. completing the attempt
   * rows of the calls whose answers these are): given the parameter list, each returns
   * `name AS (...)` and appends its own parameters. They may read `i` (the items) and, in
   * transitionMany(), `u` (the moved rows). They run whether or not the refunds move.
   */
  alsoRun?: Array<(params: unknown[]) => string>;
  /** Further SET clauses of the refunds' UPDATE (alias `r`, items `i`), appending their own parameters. */
  alsoSet?: (params: unknown[]) => string[];
  /** Further output columns, SQL over the CTEs and `u`, returned on the rows (e.g. an id an alsoRun CTE wrote). */
  alsoSelect?: string;
  /**
   * transitionMany() only: filled with what the statement found, under its row lock, of each
   * refund it did not move (a refund that does not exist is not in it). A caller that needs
   * only to know whether a status nothing leaves stood in the way (RefundOutcomeService)
   * then needs no second, locked read.
   */
  unmoved?: Map<string, Pick<RefundRow, 'status' | 'provider_request_id'>>;
}

export interface ItemColumn {
  name: string;
  /** The element's SQL type. */
  type: string;
  values: unknown[];
}

/**
 * Per-item input of a batched statement: one array parameter per column, read back as rows
 * by `unnest(...)`. The statement's text depends only on the columns, so batches of any size
 * share one prepared statement.
 */
export class ItemColumns {
  private readonly cols: ItemColumn[] = [];

  constructor(private readonly count: number) {}

  add(name: string, type: string, values: unknown[]): void {
    if (values.length !== this.count) throw new Error(`column ${name}: ${values.length} values for ${this.count} items`);
    this.cols.push({ name, type, values });
  }

  /** `i AS (SELECT * FROM unnest(...) AS i(...))`, its arrays appended to `params`. */
  cte(params: unknown[]): string {
    const args = this.cols.map((c) => {
      params.push(c.values);
      return `$${params.length}::${c.type}[]`;
    });
    return `i AS (SELECT * FROM unnest(${args.join(', ')}) AS i(${this.cols.map((c) => c.name).join(', ')}))`;
  }
}

const PATCH_TYPES: Record<(typeof PATCH_COLUMNS)[number], string> = {
  provider_refund_id: 'text',
  provider_status: 'text',
  provider_state: 'text',
  provider_request_id: 'text',
  refunded_amount: 'numeric',
  failure_code: 'text',
  failure_category: 'text',
  failure_message: 'text',
  next_check_at: 'timestamptz',
  check_count: 'int',
};

/** A constant of this file's own making as SQL (inlineStart()): a string, a number or null. */
function sqlLiteral(value: unknown): string {
  if (value === null) return 'NULL';
  if (typeof value === 'number' && Number.isInteger(value)) return String(value);
  if (typeof value === 'string') return `'${value.replace(/'/g, "''")}'`;
  throw new Error(`no SQL literal for ${typeof value}`);
}

/** The columns a move to `to` sets besides the patch given: what every transition implies. */
function normalisedPatch(to: RefundStatus, given: RefundPatch): RefundPatch {
  const patch = { ...given };
  if (to === 'succeeded') {
    // refunded_amount = amount is set in SQL; a final success always refunds the full amount.
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
  return patch;
}

/**
 * SET clauses (alias `r`, items `i`) for per-item patches: a column any item's patch names
 * becomes two item columns, whether it is set and its value, so an item that leaves it out
 * keeps the refund's own. provider_details is merged (jsonb ||), never replaced.
 */
function patchSets(patches: RefundPatch[], cols: ItemColumns, skip: string[] = []): string[] {
  const sets: string[] = [];
  for (const col of PATCH_COLUMNS) {
    if (skip.includes(col) || !patches.some((p) => p[col] !== undefined)) continue;
    cols.add(`has_${col}`, 'boolean', patches.map((p) => p[col] !== undefined));
    cols.add(col, PATCH_TYPES[col], patches.map((p) => p[col] ?? null));
    sets.push(`${col} = CASE WHEN i.has_${col} THEN i.${col} ELSE r.${col} END`);
  }
  const details = patches.map((p) => (p.provider_details && Object.keys(p.provider_details).length > 0 ? p.provider_details : null));
  if (details.some((d) => d !== null)) {
    cols.add('provider_details', 'jsonb', details);
    sets.push(`provider_details = CASE WHEN i.provider_details IS NULL THEN r.provider_details ELSE r.provider_details || i.provider_details END`);
  }
  return sets;
}
