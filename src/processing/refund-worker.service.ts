import { Injectable, Logger, Optional } from '@nestjs/common';
import { Batcher, batchLimits, oneItemMayHaveFailed } from '../common/batcher.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { AppConfig } from '../config/config.js';
import { Database } from '../database/database.js';
import { money } from '../common/money.js';
import type { PaymentRow } from '../payments/payment.row.js';
import type { ProviderOutcome, ProviderResult, RefundCommand, RefundProvider } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import { RefundPatch, RefundStateService } from '../refunds/refund-state.service.js';
import { AttemptCompletion, AttemptsService } from './attempts.service.js';
import { pendingPatch, RefundOutcomeService } from './refund-outcome.service.js';
import type { RefundRow } from '../refunds/refund.row.js';
import type { RefundStatus } from '../refunds/refund-status.js';

/** What the job should do after a step: nothing more, or come back at a time. */
/** How long a last-slot refund waits before looking again at the refunds in flight. */
const LAST_SLOT_WAIT_MS = 2_000;
/** Statuses a worker still follows: requires_action is polled slowly, since the provider may move on its own. */
const OWED: string[] = ['queued', 'processing', 'requires_action'];
/** Statuses that are not owed but can become owed again (ops retry; approval). */
const REOPENABLE: string[] = ['failed', 'pending_approval'];
/** For providers that dedup creates: every this many inconclusive checks, re-send the same create. */
const RESEND_EVERY = 6;

export type StepResult = { done: true } | { done: false; at: Date };

/**
 * `started`: the in_flight attempt row of the call the step is about to make, when the
 * claim's statement wrote it (claimMany()): a create (the claim moved the refund to
 * processing) or a query.
 */
type Started = { id: string; operation: 'create' | 'query' };
type Claimed = { row: RefundRow; payment: PaymentRow | undefined; slots: number | null; started?: Started };
/** What the claim's own statement saw of a refund it could not claim (null: no such refund). */
type Unclaimed = { unclaimed: Pick<RefundRow, 'status' | 'lease_until' | 'next_check_at'> | null };
type Start = { refundId: string; requestId: string };
type Reschedule = { refundId: string; status: RefundStatus; patch: RefundPatch; attempt?: AttemptCompletion };

/** A fresh provider request id: 32 hex characters, valid for every provider's id field. */
export function newProviderRequestId(): string {
  return randomUUID().replace(/-/g, '');
}

/**
 * Moves one refund one step forward. Called by the BullMQ job of the refund; the job is a
 * nudge, the row is the truth. Exclusive per refund through a lease in the row, so two
 * workers never talk to the provider about the same refund at once, even when BullMQ
 * hands a stalled job to a second worker.
 *
 * The provider request id is stored (and the refund marked `unknown` at the provider)
 * before every create call. Any refund in that state is resolved by a query with the same
 * id first; a create is (re)sent only when the provider confirms it has no such refund.
 */
@Injectable()
export class RefundWorkerService {
  private readonly logger = new Logger('RefundWorker');
  private readonly owner = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  /** Refunds whose lease this process released while rescheduling (see updateAndRelease()), with a count per refund. */
  private readonly released = new Map<string, number>();
  private lastSlot?: Array<{ name: string; max: number }>;
  private readonly claims: Batcher<string, Claimed | Unclaimed>;
  private readonly starts: Batcher<Start, (RefundRow & { started_attempt_id: string | null }) | null>;
  private readonly reschedules: Batcher<Reschedule, boolean>;
  /** The claim's move of a queued refund to processing (claimMany()), built once. */
  private readonly inlineStart: ReturnType<RefundStateService['inlineStart']>;

  constructor(
    private readonly db: Database,
    private readonly cfg: AppConfig,
    private readonly providers: ProvidersService,
    private readonly state: RefundStateService,
    private readonly attempts: AttemptsService,
    private readonly outcomes: RefundOutcomeService,
    @Optional() private readonly metrics?: MetricsService,
  ) {
    this.inlineStart = this.state.inlineStart('worker');
    this.claims = new Batcher((ids) => this.claimMany(ids), {
      ...batchLimits(this.cfg.processing.batchSize),
      keyOf: (id) => id,
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.workerBatchSize.observe({ statement: 'claim' }, n),
      onSplit: () => this.metrics?.workerBatchSplits.inc({ statement: 'claim' }),
    });
    this.starts = new Batcher((items) => this.startMany(items), {
      ...batchLimits(this.cfg.processing.batchSize),
      keyOf: (s) => s.refundId,
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.workerBatchSize.observe({ statement: 'start' }, n),
      onSplit: () => this.metrics?.workerBatchSplits.inc({ statement: 'start' }),
    });
    this.reschedules = new Batcher((items) => this.rescheduleMany(items), {
      ...batchLimits(this.cfg.processing.batchSize),
      keyOf: (r) => r.refundId,
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.workerBatchSize.observe({ statement: 'reschedule' }, n),
      onSplit: () => this.metrics?.workerBatchSplits.inc({ statement: 'reschedule' }),
    });
  }

  /**
   * Moves queued refunds to processing before their creates are sent: the provider request
   * id stored (after a crash or timeout we ask about this id, never a new one) and each
   * create's in_flight attempt row written, by one statement for all of them. Only for
   * refunds the claim left queued: a Binance Pay refund that may take its payment's last
   * slot, once lastSlotGate() has let it go (the claim moves the others, claimMany()).
   */
  private startMany(items: Start[]): Promise<Array<(RefundRow & { started_attempt_id: string | null }) | null>> {
    return this.state.transitionMany(
      this.db,
      items.map(({ refundId, requestId }) => ({
        refundId,
        to: 'processing' as const,
        from: ['queued' as const],
        patch: { provider_request_id: requestId, provider_state: 'unknown' as const, check_count: 0 },
      })),
      { actor: 'worker', ...this.attempts.startWithTransition('create') },
    ) as Promise<Array<(RefundRow & { started_attempt_id: string | null }) | null>>;
  }

  async step(refundId: string): Promise<StepResult> {
    const claimed = await this.claim(refundId);
    if ('unclaimed' in claimed) {
      // A failed refund can be put back in line by an ops retry, a pending one by its
      // approval; the claim saw the row as of its snapshot, which may predate that commit.
      // Read it afresh then (rare), so the job is not dropped for the sweeper to find.
      if (claimed.unclaimed && REOPENABLE.includes(claimed.unclaimed.status)) return this.whenClaimable(refundId);
      return this.notClaimable(claimed.unclaimed);
    }
    try {
      return await this.advance(claimed.row, claimed.payment, claimed.slots, claimed.started);
    } finally {
      // A step that ends by rescheduling released the lease in that same statement.
      const n = this.released.get(refundId) ?? 0;
      if (n > 1) this.released.set(refundId, n - 1);
      else this.released.delete(refundId);
      if (n === 0) {
        await this.db.query(`UPDATE refunds SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2`, [
          refundId,
          this.owner,
        ]);
      }
    }
  }

  /**
   * Leases the refund and reads its payment's provider data, in one statement; for a queued
   * refund of a provider with a last-refund rule, also the payment's used slots (the quick,
   * unlocked count of lastSlotGate()); and where it can, starts the step's call (claimMany()).
   * Claims made while others are at Postgres go together.
   */
  private claim(refundId: string): Promise<Claimed | Unclaimed> {
    return this.claims.submit(refundId);
  }

  /**
   * One statement claims many refunds. A refund whose row another transaction holds locked
   * right now (a webhook or an ops action changing it) is skipped, not waited for, so a batch
   * never queues behind one row or deadlocks with another batch: its step finds it not
   * claimable and looks again shortly (notClaimable()), as when another worker holds it.
   *
   * For each refund it could not claim, the same statement returns what it saw of the row
   * (`u`, read in the statement's snapshot), so the step decides when to look again without
   * a second statement: most often the refund is final already, its webhook having won the
   * race with this poll (finding 35; round 13 counted 0.65 such reads per refund at 2,000 ms).
   * A refund changed between the snapshot and the lock reads as it was: one still owed then
   * (a webhook's commit making it final) is looked at again in 250 ms; one not owed then
   * but reopenable (failed, pending approval) is read afresh by step().
   *
   * A claimed refund whose step can only be a query (sent already, at a provider that dedups
   * creates, and not due for a re-sent create: see advance()) has that query's attempt counted
   * and its in_flight row written by the same statement, as startMany() does for creates; a
   * statement and an update of the refund's row fewer per query (finding 48). Nothing runs
   * between the claim and that call but in-memory work, so the row is no more likely to be
   * left in_flight by a crash than when it was written just before the call.
   *
   * Likewise a claimed queued refund is moved to processing by the same statement, its
   * provider request id stored and its create's in_flight row written, as startMany() would:
   * one update of the refund's row and one statement fewer per refund (finding 50). Not when
   * its payment may be at its provider's last slot (the quick count above says how many are
   * used): lastSlotGate() then decides under the payment's lock, and startMany() moves it.
   * The quick count is the one lastSlotGate() trusts far from the limit, made in the same
   * snapshot as before, now by the statement that moves the refund rather than before it.
   */
  private async claimMany(ids: string[]): Promise<Array<Claimed | Unclaimed>> {
    type Found = RefundRow & {
      asked_id: string;
      payment_provider_data: PaymentRow['provider_data'] | null;
      quick_slots: number | null;
      started_attempt_id: string | null;
      started_operation: 'create' | 'query' | null;
      seen_status: RefundStatus | null;
      seen_lease_until: Date | null;
      seen_next_check_at: Date | null;
      start_now: boolean | null;
      query_now: boolean | null;
    };
    const lastSlot = this.lastSlotProviders();
    const start = this.inlineStart;
    // advance()'s test, in SQL, over the row as locked: a processing refund whose next call
    // is a query (should the two ever disagree, advance() follows its own and marks the
    // started row not sent).
    const queryNext = `d.status IN ('processing', 'requires_action') AND d.provider = ANY($5::text[])
                       AND d.provider_request_id IS NOT NULL
                       AND NOT (d.provider_state = 'unknown' AND d.check_count > 0 AND d.check_count % $6::int = 0)`;
    // A queued refund is moved to processing by the claim (finding 50) unless its provider is
    // off (it waits; advance()) or its payment may be at its last slot: the quick count says
    // so, and lastSlotGate() takes the payment's lock to decide, after the claim.
    // A count that is missing for a provider with the rule leaves the decision to the gate.
    const startNow = `d.status = 'queued' AND d.provider = ANY($7::text[])
                      AND (d.max_slots IS NULL OR COALESCE(d.quick_slots + 1 < d.max_slots, false))`;
    // Owed, not leased, due (within 50 ms: a step's job may fire a moment early). Read in `l`
    // only so that the slot count is made for the rows the claim takes.
    const claimable = `r.status IN ('queued', 'processing', 'requires_action')
            AND (r.lease_until IS NULL OR r.lease_until < now())
            AND (r.next_check_at IS NULL OR r.next_check_at <= now() + interval '50 milliseconds')`;
    const rows = await this.db.query<Found>(
      `WITH l AS (
         SELECT r.id, r.status, r.provider, r.provider_request_id, r.provider_state, r.check_count,
                CASE WHEN r.status = 'queued' AND r.provider = ANY($4::text[]) AND ${claimable}
                     THEN (SELECT s.slots FROM (${slotsSql('r.provider', 'r.payment_id', 'r.id', 'r.status_changed_at')}) s) END AS quick_slots,
                ($8::int[])[array_position($4::text[], r.provider)] AS max_slots
           FROM refunds r WHERE r.id = ANY($1::uuid[]) FOR UPDATE OF r SKIP LOCKED),
       d AS (SELECT d.*, (${startNow}) AS start_now, (${queryNext}) AS query_now FROM l d),
       c AS (
         UPDATE refunds r
            SET lease_owner = $2, lease_until = now() + make_interval(secs => $3::double precision / 1000),
                attempt_count = r.attempt_count + CASE WHEN d.start_now OR d.query_now THEN 1 ELSE 0 END,
                ${start.sets('d.start_now').join(',\n                ')}
           FROM d
          WHERE r.id = d.id AND ${claimable}
          RETURNING r.*, d.start_now, d.query_now, d.quick_slots),
       ${start.records('(SELECT id FROM c WHERE c.start_now)')},
       q AS (
         INSERT INTO refund_attempts (refund_id, number, provider_request_id, operation, outcome)
         SELECT c.id, c.attempt_count, c.provider_request_id, CASE WHEN c.start_now THEN 'create' ELSE 'query' END, 'in_flight'
           FROM c WHERE c.start_now OR c.query_now
         RETURNING id, refund_id, operation)
       SELECT a.id AS asked_id, c.*, p.provider_data AS payment_provider_data,
              q.id AS started_attempt_id, q.operation AS started_operation,
              u.status AS seen_status, u.lease_until AS seen_lease_until, u.next_check_at AS seen_next_check_at
         FROM unnest($1::uuid[]) AS a(id)
         LEFT JOIN c ON c.id = a.id
         LEFT JOIN q ON q.refund_id = c.id
         LEFT JOIN payments p ON p.provider = c.provider AND p.payment_id = c.payment_id
         LEFT JOIN refunds u ON u.id = a.id AND c.id IS NULL`,
      [
        ids,
        this.owner,
        this.cfg.processing.leaseMs,
        lastSlot.map((p) => p.name),
        this.queryOnClaimProviders(),
        RESEND_EVERY,
        this.startOnClaimProviders(),
        lastSlot.map((p) => p.max),
      ],
    );
    const byId = new Map<string, Claimed | Unclaimed>();
    const started: RefundRow[] = [];
    for (const found of rows) {
      const {
        asked_id: askedId,
        payment_provider_data: data,
        quick_slots: slots,
        started_attempt_id: startedId,
        started_operation: operation,
        seen_status: status,
        seen_lease_until: leaseUntil,
        seen_next_check_at: nextCheckAt,
        start_now: _startNow,
        query_now: _queryNow,
        ...row
      } = found;
      if (row.id === null) {
        byId.set(askedId, { unclaimed: status === null ? null : { status, lease_until: leaseUntil, next_check_at: nextCheckAt } });
        continue;
      }
      if (operation === 'create') started.push(row);
      // Only the payment's provider data is used from here on (command()).
      byId.set(askedId, {
        row,
        payment: data === null ? undefined : ({ provider_data: data } as PaymentRow),
        // Read for a queued refund of a provider with a last-refund rule that was not started.
        slots: row.status === 'queued' ? slots : null,
        started: startedId === null || operation === null ? undefined : { id: startedId, operation },
      });
    }
    start.count(started);
    return ids.map((id) => byId.get(id) ?? { unclaimed: null });
  }

  /**
   * Providers whose processing refunds the claim may start a query for: enabled (asked each
   * time, as advance() asks) and deduplicating creates, so the step's first statement after
   * the claim is that call. A provider that does not (Lean) reads its last
   * create's end first, which may fail; its query rows are still written just before the call.
   */
  private queryOnClaimProviders(): string[] {
    return this.providers
      .all()
      .filter((p) => p.createIsIdempotent && p.isEnabled())
      .map((p) => p.name);
  }

  /**
   * Providers whose queued refunds the claim may move to processing, starting their creates:
   * enabled (asked each time, as advance() asks). Their step's first statement after the
   * claim is that call, for every provider: a create reads nothing first.
   */
  private startOnClaimProviders(): string[] {
    return this.providers
      .all()
      .filter((p) => p.isEnabled())
      .map((p) => p.name);
  }

  /** Providers whose last allowed refund takes the whole remainder (Binance Pay), with their limit. */
  private lastSlotProviders(): Array<{ name: string; max: number }> {
    this.lastSlot ??= this.providers
      .all()
      .filter((p) => p.lastRefundTakesRemainder && p.maxRefundsPerPayment !== undefined)
      .map((p) => ({ name: p.name, max: p.maxRefundsPerPayment! }));
    return this.lastSlot;
  }

  /** The refund could not be claimed: finished, leased by another worker, or not due yet. */
  private async whenClaimable(refundId: string): Promise<StepResult> {
    const row = await this.db.one<Pick<RefundRow, 'status' | 'lease_until' | 'next_check_at'>>(
      `SELECT status, lease_until, next_check_at FROM refunds WHERE id = $1`,
      [refundId],
    );
    return this.notClaimable(row ?? null);
  }

  /** From what was seen of a refund that could not be claimed: done, or when to look again. */
  private notClaimable(row: Unclaimed['unclaimed']): StepResult {
    if (!row || !OWED.includes(row.status)) return { done: true };
    const times = [row.lease_until, row.next_check_at].filter((t): t is Date => t !== null).map((t) => t.getTime());
    const at = Math.max(Date.now() + 250, ...times);
    return { done: false, at: new Date(at) };
  }

  private async advance(
    row: RefundRow,
    payment: PaymentRow | undefined,
    quickSlots: number | null,
    started?: Started,
  ): Promise<StepResult> {
    const provider = this.providers.find(row.provider);
    if (!provider || !provider.isEnabled()) {
      // Credentials removed after the refund was accepted: keep it, check again later. (A
      // provider's configuration is fixed when the process starts, so a claim never starts a
      // call for one that is off here; should that change, the row says it was not sent, and
      // a refund the claim moved to processing is asked about, as after a crash.)
      this.logger.warn({ refundId: row.id, provider: row.provider }, 'provider not configured; refund waits');
      const unsent = started && notSent(row, started, `provider not configured; the ${started.operation} was not sent`);
      return this.reschedule(row, { kind: 'retry', reason: 'provider not configured' }, unsent);
    }
    // The claim moved it to processing (its request id stored, its create's row written).
    if (started?.operation === 'create') return this.submit(provider, row, payment, started);
    let queryStarted = started?.operation === 'query' ? started : undefined;
    if (row.status === 'queued') {
      if (provider.lastRefundTakesRemainder && provider.maxRefundsPerPayment !== undefined) {
        const gate = await this.lastSlotGate(row, provider.maxRefundsPerPayment, quickSlots);
        if (gate === 'wait') {
          const at = new Date(Date.now() + LAST_SLOT_WAIT_MS);
          await this.db.query(`UPDATE refunds SET next_check_at = $2 WHERE id = $1 AND status = 'queued'`, [row.id, at]);
          return { done: false, at };
        }
        if (gate === 'mismatch') return this.refuseLastSlot(row);
      }
      const requestId = row.provider_request_id ?? newProviderRequestId();
      // One statement, atomic on its own (no transaction around it), shared with the moves
      // of other steps meanwhile (startMany()).
      const moved = await this.starts.submit({ refundId: row.id, requestId });
      if (!moved) return this.whenClaimable(row.id);
      const { started_attempt_id: startedId, ...refund } = moved;
      return this.submit(provider, refund as RefundRow, payment, startedId === null ? undefined : { id: startedId });
    }
    // processing
    const cmd = this.command(row, payment);
    if (!provider.createIsIdempotent) {
      // When the last create call ENDED (or, still in flight or cut short by a crash, the latest
      // it could end): the provider may act on a create until the moment we gave up on it, so
      // the absence grace counts from there, not from when the call started.
      const [last] = await this.db.query<{ at: Date | null }>(
        `SELECT max(COALESCE(completed_at, created_at + make_interval(secs => $2::double precision / 1000))) AS at
           FROM refund_attempts WHERE refund_id = $1 AND operation = 'create'`,
        [row.id, this.cfg.processing.providerTimeoutMs],
      );
      cmd.lastCreateAt = last?.at ?? null;
    }
    const resendDue = row.provider_state === 'unknown' && provider.createIsIdempotent && row.check_count > 0 && row.check_count % RESEND_EVERY === 0;
    if (resendDue && queryStarted) {
      // The claim's copy of this test (claimMany()) disagrees with it: a bug. This test wins.
      this.logger.error({ refundId: row.id }, 'the claim started a query where a re-sent create is due');
      await this.attempts.complete(this.db, notSent(row, queryStarted, 'a re-sent create was due; the query was not sent'));
      queryStarted = undefined;
    }
    if (resendDue) {
      // Queries keep failing to settle it (e.g. the provider's "not found" answer is not the one
      // we expect): re-send the create with the SAME id, which the provider dedups. Absence is
      // not confirmed here, so a refusal proves nothing (it may refuse because the first landed).
      const resent = await this.call(provider, row, 'create', cmd);
      const o = resent.result.outcome;
      if (o.kind === 'final' && o.status === 'failed' && !o.update.providerStatus && !o.update.providerRefundId) {
        return this.reschedule(row, { kind: 'unknown', reason: `re-sent create refused (${o.update.failureCode}); absence unconfirmed` }, resent.completion);
      }
      return this.apply(row, o, resent.completion);
    }
    // The list the query reads is no older than this: absence is judged from here.
    const queriedAt = Date.now();
    const query = await this.call(provider, row, 'query', cmd, queryStarted);
    if (query.result.outcome.kind === 'not_found') {
      const sinceCreate = cmd.lastCreateAt ? queriedAt - cmd.lastCreateAt.getTime() : Infinity;
      if (!provider.createIsIdempotent && sinceCreate < this.cfg.processing.absenceGraceMs) {
        // No idempotency at this provider: a create sent moments ago may not be listed yet.
        return this.reschedule(
          row,
          { kind: 'retry', reason: 'too soon to trust absence', retryAfterMs: this.cfg.processing.absenceGraceMs - sinceCreate },
          query.completion,
        );
      }
      if (row.provider_state === 'acknowledged') {
        // The provider once had it and now denies it: never resend blindly; ops must look.
        this.logger.error({ refundId: row.id }, 'provider no longer knows an acknowledged refund');
        return this.reschedule(row, { kind: 'unknown', reason: 'acknowledged refund not found at provider' }, query.completion);
      }
      // Confirmed absent: (re)send the create with the same provider request id. The query's
      // attempt row is completed first, so the attempts read in order.
      await this.attempts.complete(this.db, query.completion);
      return this.submit(provider, row, payment);
    }
    return this.apply(row, query.result.outcome, query.completion);
  }

  /**
   * Binance refunds the whole remainder on the last refund it allows, whatever amount is
   * sent. A refund that would take that last slot is sent only when no other refund on the
   * payment is in flight (one of them failing would enlarge the remainder), and only if its
   * amount is exactly the remainder then.
   */
  private async lastSlotGate(row: RefundRow, max: number, quickSlots: number | null): Promise<'ok' | 'wait' | 'mismatch'> {
    // Far from the limit (nearly always), one unlocked count settles it. It is the count the
    // locked look makes: the payment lock orders that look only against creates and ops
    // retries on the payment, and neither can make this refund the last slot (the guard under
    // that lock caps the slots; refunds they queue come after this one), while the step to
    // processing comes after the lock is released in either case. Near the limit, the locked look.
    // The claim made that count already (quickSlots); without it, it is made here.
    const slots = quickSlots ?? (await this.db.query<{ slots: number }>(slotsSql('$1', '$2', '$3', '$4'), [row.provider, row.payment_id, row.id, row.status_changed_at]))[0]?.slots;
    if (slots !== undefined && slots + 1 < max) return 'ok';
    return this.db.transaction(async (tx) => {
      const [payment] = await tx.query<{ amount: string }>(
        `SELECT amount FROM payments WHERE provider = $1 AND payment_id = $2 FOR UPDATE`,
        [row.provider, row.payment_id],
      );
      const [others] = await tx.query<{ slots: number; active: number; refunded: string }>(slotsSql('$1', '$2', '$3', '$4'), [
        row.provider,
        row.payment_id,
        row.id,
        row.status_changed_at,
      ]);
      if (!payment || others.slots + 1 < max) return 'ok';
      if (others.active > 0) return 'wait';
      return money(payment.amount).minus(others.refunded).eq(row.amount) ? 'ok' : 'mismatch';
    });
  }

  /** The last-slot refund no longer equals the remainder: fail it before anything is sent. */
  private async refuseLastSlot(row: RefundRow): Promise<StepResult> {
    await this.db.transaction(async (tx) => {
      const moved = await this.state.transition(tx, row.id, 'processing', { from: ['queued'], actor: 'worker' });
      if (!moved) return;
      await this.state.transition(tx, row.id, 'failed', {
        from: ['processing'],
        actor: 'worker',
        patch: {
          provider_state: 'not_sent',
          failure_code: 'last_refund_amount_mismatch',
          failure_message:
            'This is the last refund the provider allows on the payment and it would refund the whole remainder, which no longer equals this amount (an earlier refund failed). Nothing was sent; create a refund of the remainder instead.',
        },
      });
    });
    return { done: true };
  }

  private async submit(provider: RefundProvider, row: RefundRow, payment: PaymentRow | undefined, started?: { id: string }): Promise<StepResult> {
    const { result, completion } = await this.call(provider, row, 'create', this.command(row, payment), started);
    return this.apply(row, result.outcome, completion);
  }

  command(row: RefundRow, payment: PaymentRow | undefined): RefundCommand {
    return {
      refundId: row.id,
      providerRequestId: row.provider_request_id!,
      providerRefundId: row.provider_refund_id,
      paymentId: row.payment_id,
      amount: row.amount,
      currency: row.currency,
      createdAt: row.created_at,
      reason: row.reason,
      description: row.description,
      options: row.provider_options,
      paymentData: payment?.provider_data ?? {},
    };
  }

  /**
   * One provider call, recorded in refund_attempts before it starts. How it ended is returned
   * for the step's next statement to write (apply() and reschedule() take it), one round trip
   * fewer per call.
   */
  private call(
    provider: RefundProvider,
    row: RefundRow,
    kind: 'create' | 'query',
    cmd: RefundCommand,
    started?: { id: string },
  ): Promise<{ result: ProviderResult; completion: AttemptCompletion }> {
    return this.attempts.recordDeferred(
      row,
      cmd.providerRequestId,
      kind,
      () => (kind === 'create' ? provider.submitRefund(cmd) : provider.queryRefund(cmd)),
      started,
    );
  }

  /**
   * Applies a classified outcome, writing the call's attempt completion with it; conditional
   * on the refund's status, so late answers change nothing.
   */
  private async apply(row: RefundRow, outcome: ProviderOutcome, attempt: AttemptCompletion): Promise<StepResult> {
    switch (outcome.kind) {
      case 'final': {
        // If someone else (a webhook) moved it first, the refund is no longer ours to follow.
        const applied = await this.outcomes.apply(row.id, outcome, 'worker', row.provider_request_id, { attempt });
        // A move to a status nothing leaves clears the lease in the same statement
        // (RefundStateService); after `failed` the step releases it as usual. A refund found
        // in such a status (e.g. its webhook won the race) had its lease cleared by the move
        // into it, and no claim leases a refund in it again, so this step's lease is gone too.
        if ((applied === 'final' && outcome.status !== 'failed') || applied === 'already_final') this.markReleased(row.id);
        return { done: true };
      }
      case 'pending':
        if (row.status === 'processing' && outcome.status === 'processing') return this.reschedule(row, outcome, attempt);
        // Into or out of requires_action: a status change, with its own next check.
        await this.outcomes.apply(row.id, outcome, 'worker', row.provider_request_id, { attempt });
        return this.whenClaimable(row.id);
      case 'not_found':
        return this.reschedule(row, { kind: 'unknown', reason: 'not found' }, attempt);
      case 'retry':
      case 'unknown':
        return this.reschedule(row, outcome, attempt);
    }
  }

  /** The step's lease went with a statement already; step() must not release it again. */
  private markReleased(refundId: string): void {
    this.released.set(refundId, (this.released.get(refundId) ?? 0) + 1);
  }

  /** Sets the next check with exponential back-off and jitter; non-final refunds are polled until final. */
  private async reschedule(row: RefundRow, outcome: ProviderOutcome, attempt?: AttemptCompletion): Promise<StepResult> {
    const { pollInitialDelayMs, pollMaxDelayMs } = this.cfg.processing;
    const exp = Math.min(pollMaxDelayMs, pollInitialDelayMs * 2 ** Math.min(row.check_count, 30));
    // Equal jitter: spread retries of many refunds so they do not hit the provider in waves.
    let delay = exp / 2 + Math.random() * (exp / 2);
    if (outcome.kind === 'retry' && outcome.retryAfterMs !== undefined) delay = Math.max(delay, outcome.retryAfterMs);
    const at = new Date(Date.now() + Math.round(delay));
    const patch: RefundPatch = { next_check_at: at, check_count: row.check_count + 1 };
    if (outcome.kind === 'unknown') {
      this.logger.warn({ refundId: row.id, reason: outcome.reason }, 'provider outcome unknown; will ask again');
    }
    if (outcome.kind === 'pending') Object.assign(patch, pendingPatch(outcome));
    // The status the step found: a queued refund whose provider is off waits as queued.
    const status = row.status;
    const updated = await this.updateAndRelease(row.id, status, patch, attempt);
    return updated ? { done: false, at } : this.whenClaimable(row.id);
  }

  /**
   * RefundStateService.update (provider facts and the next check, no status change) plus the
   * release of this worker's lease, in one statement instead of two: the step is over. The
   * reschedules of other steps meanwhile share that statement (rescheduleMany()).
   */
  private async updateAndRelease(refundId: string, status: RefundStatus, patch: RefundPatch, attempt?: AttemptCompletion): Promise<boolean> {
    const known = new Set(['provider_refund_id', 'provider_status', 'provider_state', 'next_check_at', 'check_count', 'provider_details']);
    if (Object.keys(patch).some((k) => !known.has(k) && patch[k as keyof RefundPatch] !== undefined)) {
      // A patch field this statement does not write: the general update, and the release in step().
      if (attempt) await this.attempts.complete(this.db, attempt);
      return (await this.state.update(this.db, refundId, [status], patch)) !== null;
    }
    // The call's attempt row is completed by the same statement (whether or not the refund's
    // status still matched); should it fail, on its own (carrying()).
    const updated = await this.attempts.carrying(attempt, () => this.reschedules.submit({ refundId, status, patch, attempt }));
    if (attempt) await this.attempts.completeExtras(this.db, attempt);
    // The lease went with this statement whether or not the status still matched.
    this.markReleased(refundId);
    return updated;
  }

  private rescheduleMany(items: Reschedule[]): Promise<boolean[]> {
    return this.state.updateMany(this.db, items, {
      ...this.attempts.completionsMany(items.map((r) => r.attempt)),
      alsoSet: (params) => {
        params.push(this.owner);
        const owner = `$${params.length}::text`;
        return [
          `lease_until = CASE WHEN r.lease_owner = ${owner} THEN NULL ELSE r.lease_until END`,
          `lease_owner = CASE WHEN r.lease_owner = ${owner} THEN NULL ELSE r.lease_owner END`,
        ];
      },
    });
  }
}

/** The completion of an attempt row written by the claim when its call was then not sent. */
function notSent(row: RefundRow, started: Started, why: string): AttemptCompletion {
  return {
    attemptId: started.id,
    refundId: row.id,
    providerRequestId: row.provider_request_id!,
    label: 'not_sent',
    call: { operation: started.operation, httpStatus: null, providerCode: null, latencyMs: 0, errorMessage: why },
    extra: [],
  };
}

/**
 * Slots are taken in the order refunds are queued for sending (creation, approval or ops
 * retry): the refund is the last one only if every other slot went before it. Each ops
 * retry of a refund the provider had acknowledged left one more used slot behind. The
 * arguments are SQL expressions: the provider, the payment id, the refund's id and its
 * status_changed_at.
 */
function slotsSql(provider: string, paymentId: string, id: string, changedAt: string): string {
  return `SELECT (COUNT(*) FILTER (WHERE status IN ('processing', 'requires_action', 'succeeded', 'partially_succeeded')
                                   OR (status = 'failed' AND provider_state = 'acknowledged')
                                   OR (status = 'queued' AND (status_changed_at, id) < (${changedAt}::timestamptz, ${id}::uuid)))
               + (SELECT COUNT(*) FROM refund_events e JOIN refunds r2 ON r2.id = e.refund_id
                   WHERE r2.provider = ${provider} AND r2.payment_id = ${paymentId} AND e.from_status = 'failed' AND e.to_status = 'queued'
                     AND e.detail->>'previousProviderState' = 'acknowledged'))::int AS slots,
              COUNT(*) FILTER (WHERE status IN ('processing', 'requires_action')
                                  OR (status = 'queued' AND (status_changed_at, id) < (${changedAt}::timestamptz, ${id}::uuid)))::int AS active,
              COALESCE(SUM(CASE WHEN status = 'succeeded' THEN amount
                                WHEN status = 'partially_succeeded' THEN refunded_amount END), 0)::text AS refunded
         FROM refunds WHERE provider = ${provider} AND payment_id = ${paymentId} AND id <> ${id}`;
}
