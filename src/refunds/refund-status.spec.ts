import { describe, expect, it } from 'vitest';
import { canTransition, FINAL_STATUSES, isFinal, REFUND_STATUSES, sourcesOf } from './refund-status.js';

describe('refund state machine', () => {
  it('allows exactly the transitions of the contract', () => {
    const allowed = REFUND_STATUSES.flatMap((from) =>
      REFUND_STATUSES.filter((to) => canTransition(from, to)).map((to) => `${from}->${to}`),
    );
    expect(allowed.sort()).toEqual(
      [
        'pending_approval->queued',
        'pending_approval->canceled',
        'queued->processing',
        'queued->canceled',
        'processing->succeeded',
        'processing->partially_succeeded',
        'processing->failed',
        'processing->requires_action',
        'requires_action->processing',
        'requires_action->canceled',
        'failed->queued',
      ].sort(),
    );
  });

  it('never leaves a final status except failed -> queued (ops retry)', () => {
    for (const from of FINAL_STATUSES) {
      for (const to of REFUND_STATUSES) {
        if (canTransition(from, to)) expect(`${from}->${to}`).toBe('failed->queued');
      }
    }
  });

  it('never moves backwards to queued from processing', () => {
    expect(canTransition('processing', 'queued')).toBe(false);
    expect(sourcesOf('queued').sort()).toEqual(['failed', 'pending_approval']);
  });

  it('knows which statuses are final', () => {
    expect(REFUND_STATUSES.filter(isFinal)).toEqual(['succeeded', 'partially_succeeded', 'failed', 'canceled']);
  });
});
