import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Database } from '../src/database/database.js';
import { RefundStateService, type TransitionItem } from '../src/refunds/refund-state.service.js';
import type { RefundRow } from '../src/refunds/refund.row.js';
import { merchantKey, sandboxPayment, startService, type TestService } from './support/service.js';

/**
 * RefundStateService.transitionMany() is what the worker's batched moves run: many refunds,
 * each with its own target status, sources, request id and patch, in one statement. Each
 * item must end exactly as the same move made alone would (transition()), whatever the
 * other items of its batch set or leave out.
 */
let svc: TestService;
let state: RefundStateService;
let db: Database;
let key: string;

beforeAll(async () => {
  // No worker: the refunds stay where the test puts them.
  svc = await startService('refund_state', { ROLE: 'api' });
  state = svc.app.get(RefundStateService);
  db = svc.app.get(Database);
  key = await merchantKey(svc, 'm_state');
}, 60_000);

afterAll(async () => {
  await svc?.stop();
});

async function queuedRefund(amount = '4.00'): Promise<string> {
  const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
  const res = await svc
    .http()
    .post('/v1/refunds')
    .set('Authorization', `Bearer ${key}`)
    .set('Idempotency-Key', `state-${paymentId}`)
    .send({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' })
    .expect(202);
  return res.body.id as string;
}

/** What a move decides about a refund: everything but ids and times (whose presence counts). */
async function outcomeOf(id: string) {
  const { rows } = await svc.db.query(
    `SELECT status, trim_scale(refunded_amount)::text AS refunded_amount, trim_scale(amount)::text AS amount, provider_request_id, provider_state, provider_refund_id, provider_status,
            provider_details, failure_code, failure_category, failure_message, check_count,
            next_check_at IS NULL AS no_next_check, completed_at IS NULL AS open, lease_owner,
            (SELECT json_agg(json_build_object('from', e.from_status, 'to', e.to_status, 'actor', e.actor, 'detail', e.detail) ORDER BY e.id)
               FROM refund_events e WHERE e.refund_id = r.id) AS events,
            (SELECT count(*)::int FROM refund_event_outbox o JOIN refund_events e ON e.id = o.event_id WHERE e.refund_id = r.id) AS outbox
       FROM refunds r WHERE id = $1`,
    [id],
  );
  const { provider_request_id: requestId, ...rest } = rows[0];
  // Request ids are per refund; what matters is whether one is set.
  return { ...rest, hasRequestId: requestId !== null };
}

/** The same moves, given per refund index, for refunds made one by one and for refunds made in one batch. */
/** `ownRequest`: the patch sets a provider request id of the refund's own (they are unique). */
type Move = Omit<TransitionItem, 'refundId'> & { ownRequest?: boolean };

async function both(count: number, rounds: Array<Array<Move | undefined>>) {
  const alone = await Promise.all(Array.from({ length: count }, () => queuedRefund()));
  const batched = await Promise.all(Array.from({ length: count }, () => queuedRefund()));
  const results: { alone: Array<Array<boolean>>; batched: Array<Array<boolean>> } = { alone: [], batched: [] };
  for (const round of rounds) {
    const moves = round.map((m, k) => (m ? { ...m, k } : undefined)).filter((m): m is Move & { k: number } => m !== undefined);
    const resolve = (ids: string[]) =>
      moves.map(({ k, ownRequest, ...m }) => ({
        ...m,
        refundId: ids[k]!,
        ...(ownRequest ? { patch: { ...m.patch, provider_request_id: `req-${ids[k]}` } } : {}),
      }));
    const one: boolean[] = [];
    for (const item of resolve(alone)) {
      one.push((await state.transition(db, item.refundId, item.to, { ...item, actor: 'test' })) !== null);
    }
    results.alone.push(one);
    results.batched.push((await state.transitionMany(db, resolve(batched), { actor: 'test' })).map((r) => r !== null));
  }
  return { alone, batched, results };
}

describe('RefundStateService.transitionMany', () => {
  it('moves each refund of a mixed batch exactly as the same move alone does', async () => {
    const waitUntil = new Date(Date.now() + 60_000);
    const start: Move = { to: 'processing', from: ['queued'], ownRequest: true, patch: { provider_state: 'unknown', check_count: 0 } };
    const { alone, batched, results } = await both(6, [
      // Round 1: five start (each with a request id of its own); the sixth asks to move from a
      // status it is not in, and stays queued.
      [start, start, start, start, start, { to: 'processing', from: ['requires_action'] }],
      // Round 2: different targets and patches in one batch: a success with provider facts, a
      // failure with a code but no message, a partial success, one whose request id does not
      // match (unchanged), a cancel of a queued refund, and nothing for the fifth.
      [
        { to: 'succeeded', from: ['processing'], patch: { provider_state: 'acknowledged', provider_refund_id: 'p-1', provider_status: 'REFUND_SUCCESS', provider_details: { settled: true } } },
        { to: 'failed', from: ['processing'], patch: { provider_state: 'acknowledged', failure_code: '400304', failure_message: null } },
        { to: 'partially_succeeded', from: ['processing'], patch: { provider_state: 'acknowledged', refunded_amount: '1.5' } },
        { to: 'succeeded', from: ['processing'], requestId: 'not-its-request' },
        undefined,
        { to: 'canceled', detail: { why: 'test' } },
      ],
      // Round 3: the failed one back in line (an ops retry), the untouched ones on to the
      // provider's answers, and a move out of a final status that must not happen.
      [
        { to: 'succeeded' },
        { to: 'queued', from: ['failed'], patch: { provider_request_id: null } },
        undefined,
        { to: 'failed', from: ['processing'], patch: { failure_code: 'provider_failed' } },
        { to: 'requires_action', patch: { provider_details: { waiting: 'address' }, next_check_at: waitUntil } },
        { to: 'processing' },
      ],
    ]);
    expect(results.batched).toEqual(results.alone);
    expect(results.alone).toEqual([
      [true, true, true, true, true, false],
      [true, true, true, false, true],
      [false, true, true, true, false],
    ]);
    for (let k = 0; k < 6; k++) expect(await outcomeOf(batched[k]!), `refund ${k}`).toEqual(await outcomeOf(alone[k]!));

    // And what they are, not only that they agree.
    const [ok, retried, partial, failed, waiting, canceled] = await Promise.all(batched.map(outcomeOf));
    expect(ok.refunded_amount).toBe(ok.amount);
    expect(ok).toMatchObject({ status: 'succeeded', provider_refund_id: 'p-1', provider_details: { settled: true }, open: false, no_next_check: true, lease_owner: null });
    expect(ok.events.map((e: { to: string }) => e.to)).toEqual(['queued', 'processing', 'succeeded']);
    expect(ok.outbox).toBe(3);
    expect(retried).toMatchObject({ status: 'queued', refunded_amount: '0', failure_code: null, failure_category: null, failure_message: null, hasRequestId: false, open: true });
    expect(partial).toMatchObject({ status: 'partially_succeeded', refunded_amount: '1.5', open: false });
    expect(failed).toMatchObject({ status: 'failed', failure_code: 'provider_failed', refunded_amount: '0', open: false });
    expect(waiting).toMatchObject({ status: 'requires_action', provider_details: { waiting: 'address' }, no_next_check: false, open: true });
    expect(canceled).toMatchObject({ status: 'canceled', open: false });
    // A time in a batch's array parameter arrives as the same instant.
    const { rows } = await svc.db.query(`SELECT next_check_at FROM refunds WHERE id = $1`, [batched[4]]);
    expect((rows[0].next_check_at as Date).getTime()).toBe(waitUntil.getTime());
    expect(canceled.events.at(-1)).toMatchObject({ from: 'queued', to: 'canceled', actor: 'test', detail: { why: 'test' } });
  });

  it('moves a refund only while its submission is the request id given', async () => {
    const ids = await Promise.all([queuedRefund(), queuedRefund()]);
    await state.transitionMany(
      db,
      ids.map((refundId, k) => ({ refundId, to: 'processing', patch: { provider_request_id: `own-${k}` } })),
      { actor: 'test' },
    );
    const unmoved = new Map<string, Pick<RefundRow, 'status' | 'provider_request_id'>>();
    const missing = randomUUID();
    const moved = await state.transitionMany(
      db,
      [
        { refundId: ids[0]!, to: 'succeeded', requestId: 'own-0' },
        { refundId: ids[1]!, to: 'succeeded', requestId: 'own-0' },
        { refundId: missing, to: 'succeeded' },
      ],
      { actor: 'test', unmoved },
    );
    expect(moved.map((r) => r?.status ?? null)).toEqual(['succeeded', null, null]);
    expect((await outcomeOf(ids[1]!)).status).toBe('processing');
    // What the statement found, under its lock, of the refund it left alone; nothing of one
    // that does not exist, nor of the one it moved.
    expect([...unmoved]).toEqual([[ids[1], { status: 'processing', provider_request_id: 'own-1' }]]);
    expect(moved[0]).not.toHaveProperty('seen_status');

    // Asked again, the moved one is found in its final status.
    const again = new Map<string, Pick<RefundRow, 'status' | 'provider_request_id'>>();
    expect(await state.transitionMany(db, [{ refundId: ids[0]!, to: 'succeeded', requestId: 'own-0' }], { actor: 'test', unmoved: again })).toEqual([null]);
    expect(again.get(ids[0]!)).toEqual({ status: 'succeeded', provider_request_id: 'own-0' });
  });
});
