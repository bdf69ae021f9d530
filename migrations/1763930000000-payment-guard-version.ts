import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `payments.guard_version`: a counter that every change raising what is spoken for on the
 * payment increments in the transaction that makes it (a new refund, an ops retry putting a
 * failed refund back in line). It lets a create check the over-refund guard against a
 * snapshot and commit only if nothing that could change the guard's answer committed since
 * (RefundsService; docs/performance.md): the refund's insert and the increment are one
 * statement, conditional on the counter still being the one the check saw.
 *
 * Adding a NOT NULL column with a constant default rewrites nothing (instant on any size);
 * fillfactor 90 leaves room on new pages for the increments to be HOT updates.
 */
export class PaymentGuardVersion1763930000000 implements MigrationInterface {
  name = 'PaymentGuardVersion1763930000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE payments ADD COLUMN guard_version bigint NOT NULL DEFAULT 0`);
    await q.query(`ALTER TABLE payments SET (fillfactor = 90)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE payments RESET (fillfactor)`);
    await q.query(`ALTER TABLE payments DROP COLUMN guard_version`);
  }
}
