import { Injectable, Logger } from '@nestjs/common';
import { AuthContext, actorOf, merchantScope } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { Database } from '../database/database.js';
import type { PaymentRow } from '../payments/payment.row.js';
import { AttemptsService } from '../processing/attempts.service.js';
import { RefundQueueService } from '../processing/refund-queue.service.js';
import { RefundOutcomeService } from '../processing/refund-outcome.service.js';
import { PaymentsService } from '../payments/payments.service.js';
import { RefundWorkerService } from '../processing/refund-worker.service.js';
import type { ProviderActionResult, RefundProvider } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import { RefundStateService } from './refund-state.service.js';
import { RefundJson, RefundRow, toRefundJson } from './refund.row.js';
import { RefundStatus } from './refund-status.js';

const CANCELABLE: RefundStatus[] = ['pending_approval', 'queued', 'requires_action'];

/**
 * Changes asked by merchants and ops after creation (refunds-api.md §4 "Change"). Each
 * is a conditional transition, so it races safely with the worker and with webhooks:
 * whoever moves the refund first wins, the other gets 409 invalid_state.
 */
@Injectable()
export class RefundActionsService {
  private readonly logger = new Logger('RefundActions');

  constructor(
    private readonly db: Database,
    private readonly providers: ProvidersService,
    private readonly state: RefundStateService,
    private readonly attempts: AttemptsService,
    private readonly worker: RefundWorkerService,
    private readonly queue: RefundQueueService,
    private readonly payments: PaymentsService,
    private readonly outcomes: RefundOutcomeService,
  ) {}

  private async load(auth: AuthContext, id: string): Promise<RefundRow> {
    const row = await this.db.one<RefundRow>(`SELECT * FROM refunds WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2)`, [
      id,
      merchantScope(auth),
    ]);
    if (!row) throw new Problem('not_found', 'No such refund.');
    return row;
  }

  private invalidState(row: RefundRow, action: string): Problem {
    return new Problem('invalid_state', `A ${row.status} refund cannot be ${action}.`, { refundStatus: row.status });
  }

  /** POST /v1/refunds/{id}/cancel: before any money moved, at the provider too where it holds the refund. */
  async cancel(auth: AuthContext, id: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    if (!CANCELABLE.includes(row.status)) throw this.invalidState(row, 'canceled');
    let detail: Record<string, unknown> = {};
    if (row.status === 'requires_action' && row.provider_state !== 'not_sent') {
      const provider = this.providers.get(row.provider);
      if (provider.cancelRefund) {
        const result = await this.act(provider, row, 'cancel', (cmd) => provider.cancelRefund!(cmd));
        if (result.outcome === 'refused') {
          throw new Problem('invalid_state', `${row.provider} refused to cancel: ${result.message ?? 'refund already in progress'}.`, {
            refundStatus: row.status,
          });
        }
        if (result.outcome === 'unknown') {
          throw new Problem('service_unavailable', `Could not confirm the cancel at ${row.provider}; try again.`, { retryAfterSeconds: 5 });
        }
        detail = { canceledAtProvider: true };
      }
    }
    const moved = await this.db.transaction((tx) =>
      this.state.transition(tx, row.id, 'canceled', { from: CANCELABLE, actor: actorOf(auth), detail }),
    );
    if (!moved) throw this.invalidState(await this.load(auth, id), 'canceled');
    return toRefundJson(moved);
  }

  /** POST /v1/refunds/{id}/approve: four-eyes, never by the key that created the refund. */
  async approve(auth: AuthContext, id: string, comment?: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    if (row.status !== 'pending_approval') throw this.invalidState(row, 'approved');
    this.assertFourEyes(auth, row, 'approve');
    const moved = await this.db.transaction((tx) =>
      this.state.transition(tx, row.id, 'queued', {
        from: ['pending_approval'],
        actor: actorOf(auth),
        detail: { action: 'approve', ...(comment ? { comment } : {}) },
      }),
    );
    if (!moved) throw this.invalidState(await this.load(auth, id), 'approved');
    await this.queue.enqueue(moved.provider, moved.id);
    return toRefundJson(moved);
  }

  /** POST /v1/refunds/{id}/reject: the refund is canceled and its amount released. */
  async reject(auth: AuthContext, id: string, comment?: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    if (row.status !== 'pending_approval') throw this.invalidState(row, 'rejected');
    this.assertFourEyes(auth, row, 'reject');
    const moved = await this.db.transaction((tx) =>
      this.state.transition(tx, row.id, 'canceled', {
        from: ['pending_approval'],
        actor: actorOf(auth),
        detail: { action: 'reject', ...(comment ? { comment } : {}) },
      }),
    );
    if (!moved) throw this.invalidState(await this.load(auth, id), 'rejected');
    return toRefundJson(moved);
  }

  private assertFourEyes(auth: AuthContext, row: RefundRow, action: string): void {
    if (row.created_by_key_id !== null && row.created_by_key_id === auth.keyId) {
      throw new Problem('forbidden', `The key that created a refund may not ${action} it.`);
    }
  }

  /**
   * POST /v1/refunds/{id}/retry: a failed refund goes back in line as a new submission with
   * a new provider request id (made by the worker), after the over-refund guard and the
   * provider's limits are checked again under the payment's lock.
   */
  async retry(auth: AuthContext, id: string, comment?: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    if (row.status !== 'failed') throw this.invalidState(row, 'retried');
    if (row.review_flagged_at) {
      // The provider may have paid after all: a human clears the flag before anyone pays again.
      throw new Problem('invalid_state', `The refund is flagged for review (${row.review_reason}); resolve the review first.`, {
        refundStatus: row.status,
      });
    }
    const provider = this.providers.get(row.provider);
    await this.assertPreviousSubmissionUnpaid(auth, provider, row);
    const moved = await this.db.transaction(async (tx) => {
      const payment = await this.payments.lockForRaise(tx, row.provider, row.payment_id);
      if (!payment) throw new Problem('payment_not_found', 'The refund’s payment is gone.');
      await this.payments.assertFits(tx, provider, payment, row.amount);
      return this.state.transition(tx, row.id, 'queued', {
        from: ['failed'],
        actor: actorOf(auth),
        patch: {
          provider_request_id: null,
          provider_refund_id: null,
          provider_status: null,
          provider_state: 'not_sent',
          check_count: 0,
        },
        detail: {
          action: 'retry',
          previousProviderRequestId: row.provider_request_id,
          previousProviderState: row.provider_state,
          previousFailureCode: row.failure_code,
          ...(comment ? { comment } : {}),
        },
      });
    });
    if (!moved) throw this.invalidState(await this.load(auth, id), 'retried');
    await this.queue.enqueue(moved.provider, moved.id);
    return toRefundJson(moved);
  }

  /**
   * A retry pays with a new provider request id, so before it, the provider is asked (read
   * only) what became of the previous submission. A provider that changed its mind (a late
   * success after a failure, as a delayed webhook would also report) must not get a second
   * payout: the refund is flagged for review and the retry refused. A provider that cannot
   * answer now gets a 503 (try again), never a blind second submission.
   */
  private async assertPreviousSubmissionUnpaid(auth: AuthContext, provider: RefundProvider, row: RefundRow): Promise<void> {
    if (!row.provider_request_id || row.provider_state === 'not_sent' || !provider.lookupRefund) return;
    const payment = await this.db.one<PaymentRow>(`SELECT * FROM payments WHERE provider = $1 AND payment_id = $2`, [
      row.provider,
      row.payment_id,
    ]);
    const found = await provider.lookupRefund({
      providerRequestId: row.provider_request_id,
      providerRefundId: row.provider_refund_id,
      paymentId: row.payment_id,
      paymentData: payment?.provider_data ?? {},
    });
    if (found.kind === 'not_found') return;
    if (found.kind === 'error') {
      throw new Problem('service_unavailable', `Could not confirm at ${row.provider} that the previous submission did not pay (${found.reason}); try again.`, {
        retryAfterSeconds: Math.max(1, Math.ceil((found.retryAfterMs ?? 5_000) / 1000)),
      });
    }
    if (found.record.status === 'failed' || found.record.status === 'canceled') return;
    const reason = `before a retry, ${row.provider} reports the previous submission (${row.provider_request_id}) as ${found.record.status} (${found.record.providerStatus ?? 'no status'}) but the refund is failed`;
    await this.outcomes.flagForReview(row.id, reason, actorOf(auth));
    throw new Problem('invalid_state', `The refund is flagged for review (${reason}); resolve the review first.`, { refundStatus: row.status });
  }

  /** POST /v1/refunds/retry: failed refunds matching the filter, oldest failure first. */
  async retryMany(
    auth: AuthContext,
    f: { provider?: string; failureCode?: string; failedFrom?: string; failedTo?: string; limit?: number; comment?: string },
  ) {
    const rows = await this.db.query<{ id: string }>(
      `SELECT id FROM refunds
        WHERE status = 'failed' AND review_flagged_at IS NULL
          AND ($1::text IS NULL OR provider = $1)
          AND ($2::text IS NULL OR failure_code = $2)
          AND ($3::timestamptz IS NULL OR status_changed_at >= $3)
          AND ($4::timestamptz IS NULL OR status_changed_at < $4)
        ORDER BY status_changed_at, id
        LIMIT $5`,
      [f.provider ?? null, f.failureCode ?? null, f.failedFrom ?? null, f.failedTo ?? null, f.limit ?? 100],
    );
    const ids: string[] = [];
    const skipped: { id: string; code: string; detail?: string }[] = [];
    for (const r of rows) {
      try {
        await this.retry(auth, r.id, f.comment);
        ids.push(r.id);
      } catch (err) {
        if (!(err instanceof Problem)) throw err;
        skipped.push({ id: r.id, code: err.code, detail: err.detail });
      }
    }
    return { retried: ids.length, ids, skipped };
  }

  /**
   * POST /v1/refunds/{id}/sync: ask the provider now. A refund still in flight is made due
   * and its job woken; a final one is compared with the provider, and a contradiction is
   * flagged for review (never applied).
   */
  async sync(auth: AuthContext, id: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    await this.db.query(`INSERT INTO audit_events (actor, action, subject, detail) VALUES ($1, 'sync', $2, $3)`, [
      actorOf(auth),
      row.id,
      { refundStatus: row.status },
    ]);
    if (['queued', 'processing', 'requires_action'].includes(row.status)) {
      await this.db.query(
        `UPDATE refunds SET next_check_at = now() WHERE id = $1 AND status IN ('queued', 'processing', 'requires_action')`,
        [row.id],
      );
      await this.queue.wake(row.provider, row.id);
      return toRefundJson(await this.load(auth, id));
    }
    if (row.provider_request_id && row.provider_state !== 'not_sent') {
      const provider = this.providers.get(row.provider);
      const payment = await this.db.one<PaymentRow>(`SELECT * FROM payments WHERE provider = $1 AND payment_id = $2`, [
        row.provider,
        row.payment_id,
      ]);
      const result = await this.attempts.record(row, row.provider_request_id, 'query', () =>
        provider.queryRefund(this.worker.command(row, payment)),
      );
      if (result.outcome.kind === 'final') await this.outcomes.apply(row.id, result.outcome, actorOf(auth), row.provider_request_id);
    }
    return toRefundJson(await this.load(auth, id));
  }

  /** POST /v1/refunds/{id}/review/resolve: a human looked at a flagged refund; audited. */
  async resolveReview(auth: AuthContext, id: string, comment: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    if (!row.review_flagged_at) throw new Problem('invalid_state', 'The refund is not flagged for review.', { refundStatus: row.status });
    await this.db.transaction(async (tx) => {
      await tx.query(`UPDATE refunds SET review_reason = NULL, review_flagged_at = NULL, updated_at = now() WHERE id = $1`, [row.id]);
      await tx.query(`INSERT INTO audit_events (actor, action, subject, detail) VALUES ($1, 'review.resolve', $2, $3)`, [
        actorOf(auth),
        row.id,
        { reason: row.review_reason, comment },
      ]);
    });
    return toRefundJson(await this.load(auth, id));
  }

  /** PATCH /v1/refunds/{id} { cobo: { toAddress } }: give a waiting Cobo refund its address. */
  async updateAddress(auth: AuthContext, id: string, toAddress: string): Promise<RefundJson> {
    const row = await this.load(auth, id);
    if (row.provider !== 'cobo') {
      throw Problem.validation([{ field: 'cobo', message: 'only cobo refunds take an address' }]);
    }
    if (row.status !== 'requires_action') throw this.invalidState(row, 'given an address');
    const provider = this.providers.get(row.provider);
    if (!provider.updateRefundAddress) throw this.invalidState(row, 'given an address');
    const result = await this.act(provider, row, 'update', (cmd) => provider.updateRefundAddress!(cmd, toAddress));
    if (result.outcome === 'refused') {
      throw new Problem('invalid_state', `${row.provider} refused the address: ${result.message ?? 'refund not waiting'}.`, {
        refundStatus: row.status,
      });
    }
    if (result.outcome === 'unknown') {
      // The update is idempotent at Cobo (same address): the merchant may simply send it again.
      throw new Problem('service_unavailable', `Could not confirm the address at ${row.provider}; send it again.`, {
        retryAfterSeconds: 5,
      });
    }
    const moved = await this.db.transaction(async (tx) => {
      await tx.query(`UPDATE refunds SET provider_options = provider_options || $2::jsonb WHERE id = $1`, [row.id, { toAddress }]);
      return this.state.transition(tx, row.id, 'processing', {
        from: ['requires_action'],
        actor: actorOf(auth),
        patch: {
          provider_state: 'acknowledged',
          next_check_at: new Date(),
          check_count: 0,
          provider_details: { ...(result.update?.details ?? {}), toAddress },
          ...(result.update?.providerStatus ? { provider_status: result.update.providerStatus } : {}),
        },
        detail: { toAddress },
      });
    });
    if (!moved) throw this.invalidState(await this.load(auth, id), 'given an address');
    // Its job is parked for the slow requires_action poll: wake it now.
    await this.queue.nudge(this.db, moved.provider, moved.id);
    return toRefundJson(moved);
  }

  private async act(
    provider: RefundProvider,
    row: RefundRow,
    operation: string,
    fn: (cmd: ReturnType<RefundWorkerService['command']>) => Promise<ProviderActionResult>,
  ): Promise<ProviderActionResult> {
    const payment = await this.db.one<PaymentRow>(`SELECT * FROM payments WHERE provider = $1 AND payment_id = $2`, [
      row.provider,
      row.payment_id,
    ]);
    const cmd = this.worker.command(row, payment);
    const action = await this.attempts.recordAction(row, row.provider_request_id ?? 'none', operation, () => fn(cmd));
    if (action.outcome !== 'done') this.logger.warn({ refundId: row.id, operation, outcome: action.outcome, message: action.message }, 'provider action not done');
    return action;
  }
}
