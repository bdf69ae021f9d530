import { Injectable, Logger, Optional } from '@nestjs/common';
import { Batcher, batchLimits, oneItemMayHaveFailed } from '../common/batcher.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { AppConfig } from '../config/config.js';
import { Database, Sql } from '../database/database.js';
import { isProviderName, type ProviderOutcome } from '../providers/provider.js';
import type { RefundRow } from '../refunds/refund.row.js';
import { TERMINAL_STATUSES } from '../refunds/refund-status.js';
import { AttemptCompletion, AttemptsService } from './attempts.service.js';
import { RefundQueueService } from './refund-queue.service.js';
import { RefundPatch, RefundStateService } from '../refunds/refund-state.service.js';

type Applicable = Extract<ProviderOutcome, { kind: 'final' | 'pending' }>;
type FinalMove = { refundId: string; outcome: Extract<ProviderOutcome, { kind: 'final' }>; requestId: string; attempt?: AttemptCompletion };
/** Whether a final move moved its refund; if not, what its statement found of the refund under the row lock. */
type FinalResult = { moved: true } | { moved: false; seen?: Pick<RefundRow, 'status' | 'provider_request_id'> };

/**
 * What apply() did: moved the refund to a final status, changed it otherwise, flagged it for
 * review, found nothing to change, or found it in a status nothing leaves (succeeded,
 * partially_succeeded, canceled) with an answer that needs nothing recorded (it would not
 * flag it). In that last case, as after a move into such a status, any lease on the refund
 * is gone: the move into it cleared the lease (RefundStateService), and no claim leases a
 * refund in it again.
 */
export type ApplyResult = 'final' | 'updated' | 'unchanged' | 'flagged' | 'already_final';

/** The actor of the worker's steps, whose final answers are batched. */
const WORKER = 'worker';
/** The prefix of the provider webhooks' actors (`webhook:binance_pay`), whose final answers are batched too. */
const WEBHOOK = 'webhook:';


/**
 * The one place a provider's answer (poll or webhook) changes a refund. Every change is
 * conditional on the refund's current status (read under its row lock), so duplicated,
 * late or reordered answers are harmless:
 * - `processing` takes any answer; `requires_action` is left by an answer that says the
 *   provider moved on (it is also polled, slowly, so it cannot be stranded);
 * - a late "waiting for an address" after the merchant gave one is ignored;
 * - final statuses take nothing.
 */
@Injectable()
export class RefundOutcomeService {
  private readonly logger = new Logger('RefundOutcome');

  /** The worker's final answers, many refunds' per statement under load. */
  private readonly finals: Batcher<FinalMove, FinalResult>;
  /** The provider webhooks' final answers, per actor (`webhook:<provider>`), batched likewise. */
  private readonly webhookFinals = new Map<string, Batcher<FinalMove, FinalResult>>();

  constructor(
    private readonly db: Database,
    private readonly state: RefundStateService,
    private readonly cfg: AppConfig,
    private readonly attempts: AttemptsService,
    private readonly queue: RefundQueueService,
    @Optional() private readonly metrics?: MetricsService,
  ) {
    this.finals = new Batcher((moves) => this.finalMany(moves, WORKER), {
      ...batchLimits(this.cfg.processing.batchSize),
      keyOf: (m) => m.refundId,
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.workerBatchSize.observe({ statement: 'final' }, n),
      onSplit: () => this.metrics?.workerBatchSplits.inc({ statement: 'final' }),
    });
  }

  /**
   * Final answers about the current submissions of refunds in processing, each moving its
   * refund under exactly the conditions the locked path (applyLocked()) would check, and
   * completing its call's attempt row, in one statement. Returns which moved, and what the
   * statement found of the others.
   */
  private async finalMany(moves: FinalMove[], actor: string): Promise<FinalResult[]> {
    const unmoved = new Map<string, Pick<RefundRow, 'status' | 'provider_request_id'>>();
    const rows = await this.state.transitionMany(
      this.db,
      moves.map((m) => ({ refundId: m.refundId, to: m.outcome.status, from: ['processing' as const], patch: finalPatch(m.outcome), requestId: m.requestId })),
      { actor, unmoved, ...this.attempts.completionsMany(moves.map((m) => m.attempt)) },
    );
    return rows.map((row, i) => (row !== null ? { moved: true } : { moved: false, seen: unmoved.get(moves[i]!.refundId) }));
  }

  /**
   * `providerRequestId` names the submission the answer is about. An answer about an
   * earlier submission (superseded by an ops retry) never changes the refund; if it says
   * money moved, the refund is flagged for review, since the new submission may pay too.
   */
  async apply(
    refundId: string,
    outcome: Applicable,
    actor: string,
    providerRequestId: string | null,
    opts: {
      /** The completion of the provider call this answer came from, written with the change. */
      attempt?: AttemptCompletion;
      /** The refund's row as the caller read it moments ago, without a lock (webhooks). */
      seen?: Pick<RefundRow, 'status' | 'provider_request_id'>;
    } = {},
  ): Promise<ApplyResult> {
    // A provider's webhook arriving after the worker finished is answered without a
    // transaction: its unlocked read can be trusted here, since a status nothing leaves stays
    // so (settledAlready()).
    if (opts.seen && !opts.attempt && settledAlready(opts.seen, outcome, providerRequestId)) return 'already_final';
    const mismatch = outcome.kind === 'final' && (outcome.update.details as { amountMismatch?: unknown } | undefined)?.amountMismatch;
    if (outcome.kind === 'final' && providerRequestId !== null && !mismatch) {
      // The common case, a final answer about the current submission of a refund in
      // processing, in one statement instead of a transaction of three: the transition is
      // conditional on exactly what the locked read below would check (status processing,
      // same request id), under the same row lock. Anything else takes the full path, and so
      // does an amount mismatch, whose review flag must commit with the status change.
      const move: FinalMove = { refundId, outcome, requestId: providerRequestId, attempt: opts.attempt };
      const result = await this.attempts.carrying(opts.attempt, () => this.submitFinal(move, actor));
      // The attempt's completion went with that statement whether or not the refund moved.
      if (opts.attempt) await this.attempts.completeExtras(this.db, opts.attempt);
      if (result.moved) return 'final';
      // Most often another answer won the race: the worker's poll and the provider's webhook
      // carry the same news, and under load either may arrive second (round 22's profiled
      // bench run counted ~0.37 worker answers per refund finding their refund final
      // already, docs/performance.md finding 59). The statement
      // read the row under its lock; a status nothing leaves can be trusted after the lock
      // is gone, so the locked path's transaction (three round trips) is needed only when
      // that status is not one, or the answer would flag it.
      if (result.seen && settledAlready(result.seen, outcome, providerRequestId)) return 'already_final';
      return this.applyLocked(refundId, outcome, actor, providerRequestId);
    }
    if (opts.attempt) await this.attempts.complete(this.db, opts.attempt);
    return this.applyLocked(refundId, outcome, actor, providerRequestId);
  }

  /**
   * The statement a final answer goes in: the worker's answers share statements with each
   * other (finalMany()), and so do each provider's webhooks: where a provider's webhooks come
   * before the poll, they make most refunds final, and one statement each made that path,
   * the one production takes most, the costliest (docs/performance.md, finding 46). Others
   * (an ops action's answer) go alone.
   */
  private submitFinal(move: FinalMove, actor: string): Promise<FinalResult> {
    if (actor === WORKER && move.attempt) return this.finals.submit(move);
    if (actor.startsWith(WEBHOOK) && !move.attempt) return this.webhookBatcher(actor).submit(move);
    return this.finalMany([move], actor).then(([one]) => one!);
  }

  private webhookBatcher(actor: string): Batcher<FinalMove, FinalResult> {
    let batcher = this.webhookFinals.get(actor);
    if (!batcher) {
      const provider = actor.slice(WEBHOOK.length);
      batcher = new Batcher(
        async (moves) => {
          const moved = await this.finalMany(moves, actor);
          // Their poll jobs have nothing left to do. Not awaited: the webhook's answer does not wait on Redis.
          if (isProviderName(provider)) {
            this.queue.retire(provider, moves.filter((m, i) => moved[i]!.moved && TERMINAL_STATUSES.includes(m.outcome.status)).map((m) => m.refundId));
          }
          return moved;
        },
        {
          ...batchLimits(this.cfg.processing.batchSize),
          keyOf: (m) => m.refundId,
          splitOn: oneItemMayHaveFailed,
          onBatch: (n) => this.metrics?.workerBatchSize.observe({ statement: 'webhook_final' }, n),
          onSplit: () => this.metrics?.workerBatchSplits.inc({ statement: 'webhook_final' }),
        },
      );
      this.webhookFinals.set(actor, batcher);
    }
    return batcher;
  }

  private applyLocked(
    refundId: string,
    outcome: Applicable,
    actor: string,
    providerRequestId: string | null,
  ): Promise<Exclude<ApplyResult, 'already_final'>> {
    return this.db.transaction(async (tx) => {
      const [cur] = await tx.query<{
        status: string;
        has_address: boolean;
        cancel_asked: boolean;
        provider_request_id: string | null;
        provider_status: string | null;
      }>(
        `SELECT status, provider_request_id, provider_status, provider_options ? 'toAddress' AS has_address,
                EXISTS (SELECT 1 FROM refund_attempts a WHERE a.refund_id = r.id AND a.operation = 'cancel') AS cancel_asked
           FROM refunds r WHERE id = $1 FOR UPDATE`,
        [refundId],
      );
      if (!cur) return 'unchanged';
      if (providerRequestId !== null && cur.provider_request_id !== providerRequestId) {
        if (outcome.kind === 'final' && (outcome.status === 'succeeded' || outcome.status === 'partially_succeeded')) {
          return this.flag(tx, refundId, `an earlier submission (${providerRequestId}) reports ${outcome.status} at the provider; the current one may pay too`, actor);
        }
        return 'unchanged';
      }
      if (cur.status !== 'processing' && cur.status !== 'requires_action') {
        if (outcome.kind === 'final' && contradicts(cur.status, outcome.status)) {
          // Never overwrite a final outcome: keep ours, and put the refund in front of a human.
          const reason = `provider reports ${outcome.status} (${outcome.update.providerStatus ?? 'no status'}) but the refund is ${cur.status}`;
          return this.flag(tx, refundId, reason, actor);
        }
        return 'unchanged';
      }
      const slowly = new Date(Date.now() + this.cfg.processing.pollMaxDelayMs);

      if (outcome.kind === 'pending') {
        const patch = pendingPatch(outcome);
        if (outcome.status === 'requires_action') {
          if (cur.status === 'requires_action') {
            await this.state.update(tx, refundId, ['requires_action'], { ...patch, next_check_at: slowly });
            return 'updated';
          }
          // We already gave the provider an address: "still waiting for one" is an old answer.
          if (cur.has_address) return 'unchanged';
          const moved = await this.state.transition(tx, refundId, 'requires_action', {
            from: ['processing'],
            actor,
            patch: { ...patch, next_check_at: slowly, check_count: 0 },
          });
          return moved ? 'updated' : 'unchanged';
        }
        if (cur.status === 'requires_action') {
          // The provider got its address another way (or our PATCH's answer was lost): follow it again.
          const moved = await this.state.transition(tx, refundId, 'processing', {
            from: ['requires_action'],
            actor,
            patch: { ...patch, next_check_at: new Date(), check_count: 0 },
          });
          return moved ? 'updated' : 'unchanged';
        }
        if (cur.provider_status && outcome.update.supersededBy?.includes(cur.provider_status)) {
          // A late or reordered answer (Cobo "Pending" after "Processing"): keep the newer facts.
          return 'unchanged';
        }
        await this.state.update(tx, refundId, ['processing'], patch);
        return 'updated';
      }

      const u = outcome.update;
      const patch = finalPatch(outcome);
      if (cur.status === 'requires_action') {
        if (outcome.status === 'failed' && cur.cancel_asked) {
          // We asked the provider to cancel and it ended the refund unpaid: that is our cancel,
          // whose answer was lost on the way.
          const canceled = await this.state.transition(tx, refundId, 'canceled', {
            from: ['requires_action'],
            actor,
            patch: { provider_status: u.providerStatus ?? null, ...(u.details ? { provider_details: u.details } : {}) },
            detail: { canceledAtProvider: true },
          });
          return canceled ? 'final' : 'unchanged';
        }
        await this.state.transition(tx, refundId, 'processing', { from: ['requires_action'], actor, patch: { next_check_at: new Date() } });
      }
      const moved = await this.state.transition(tx, refundId, outcome.status, { from: ['processing'], actor, patch });
      const mismatch = (u.details as { amountMismatch?: unknown } | undefined)?.amountMismatch;
      if (moved && mismatch) {
        // The provider paid a different amount than we asked (e.g. Binance's last-refund rule).
        await this.flag(tx, refundId, `provider refunded a different amount: ${JSON.stringify(mismatch)}`, actor);
      }
      return moved ? 'final' : 'unchanged';
    });
  }

  /**
   * The refund a provider's request id belongs to: the refund's current submission, or an
   * earlier one an ops retry superseded (kept in refund_attempts).
   */
  async findByRequestId(provider: string, requestId: string): Promise<RefundRow | undefined> {
    return (
      (await this.db.one<RefundRow>(`SELECT * FROM refunds WHERE provider = $1 AND provider_request_id = $2`, [provider, requestId])) ??
      (await this.db.one<RefundRow>(
        `SELECT r.* FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id
          WHERE r.provider = $1 AND a.provider_request_id = $2 LIMIT 1`,
        [provider, requestId],
      ))
    );
  }

  /** Puts a refund in front of a human (ops actions that find the provider disagreeing). */
  async flagForReview(refundId: string, reason: string, actor: string): Promise<void> {
    await this.db.transaction((tx) => this.flag(tx, refundId, reason, actor));
  }

  private async flag(tx: Sql, refundId: string, reason: string, actor: string): Promise<'flagged'> {
    await tx.query(
      `UPDATE refunds SET review_reason = $2, review_flagged_at = now(), updated_at = now()
        WHERE id = $1 AND review_flagged_at IS NULL`,
      [refundId, reason],
    );
    this.logger.error({ refundId, reason, actor }, 'refund flagged for review');
    return 'flagged';
  }
}

/** Provider facts of a final answer, written with the status change. */
function finalPatch(outcome: Extract<ProviderOutcome, { kind: 'final' }>): RefundPatch {
  const u = outcome.update;
  // A refusal without any provider-side refund (no status, no id) used no provider slot.
  const existsAtProvider = Boolean(u.providerStatus || u.providerRefundId);
  return {
    provider_state: existsAtProvider ? 'acknowledged' : 'not_sent',
    ...(u.providerRefundId ? { provider_refund_id: u.providerRefundId } : {}),
    ...(u.providerStatus ? { provider_status: u.providerStatus } : {}),
    ...(u.details ? { provider_details: u.details } : {}),
    ...(outcome.status === 'partially_succeeded' ? { refunded_amount: u.refundedAmount } : {}),
    ...(outcome.status === 'failed' ? { failure_code: u.failureCode ?? 'provider_failed', failure_message: u.failureMessage ?? null } : {}),
  };
}

/** Provider facts of a non-final answer, merged into the row. */
export function pendingPatch(outcome: Extract<ProviderOutcome, { kind: 'pending' }>): RefundPatch {
  return {
    provider_state: 'acknowledged',
    ...(outcome.update.providerRefundId ? { provider_refund_id: outcome.update.providerRefundId } : {}),
    ...(outcome.update.providerStatus ? { provider_status: outcome.update.providerStatus } : {}),
    ...(outcome.update.details ? { provider_details: outcome.update.details } : {}),
  };
}

/**
 * Whether the refund, as `seen`, is in a status nothing leaves (succeeded, partially_succeeded,
 * canceled: only `failed` can be retried, and none of them changes its request id), so that
 * applyLocked() is known to change nothing: true unless the answer would flag it (money moved
 * on another submission, or a final word that contradicts ours), which goes on to be recorded
 * there.
 */
function settledAlready(seen: Pick<RefundRow, 'status' | 'provider_request_id'>, outcome: Applicable, providerRequestId: string | null): boolean {
  if (!TERMINAL_STATUSES.includes(seen.status)) return false;
  const otherSubmission = providerRequestId !== null && seen.provider_request_id !== providerRequestId;
  const wouldFlag =
    outcome.kind === 'final' &&
    (otherSubmission ? outcome.status === 'succeeded' || outcome.status === 'partially_succeeded' : contradicts(seen.status, outcome.status));
  return !wouldFlag;
}

/** Whether a provider's final word contradicts ours about money (canceled and failed agree: nothing moved). */
function contradicts(ours: string, theirs: string): boolean {
  const moved = (s: string) => (s === 'succeeded' ? 'all' : s === 'partially_succeeded' ? 'part' : s === 'failed' || s === 'canceled' ? 'none' : 'open');
  return moved(ours) !== 'open' && moved(ours) !== moved(theirs);
}
