import { Injectable, Logger } from '@nestjs/common';
import { AuthContext, actorOf, merchantScope } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { Database } from '../database/database.js';
import type { PaymentRow } from '../payments/payment.row.js';
import { AttemptsService } from '../processing/attempts.service.js';
import { RefundQueueService } from '../processing/refund-queue.service.js';
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
    return new Problem('invalid_state', `A ${row.status} refund cannot be ${action}.`, { status: row.status });
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
            status: row.status,
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
        status: row.status,
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
