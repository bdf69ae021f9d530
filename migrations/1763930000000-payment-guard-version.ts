import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `payments.guard_version`: a counter that moves, in the same transaction, with every change
 * that can raise what is spoken for on the payment, so a create can check the over-refund
 * guard against a snapshot and commit only if nothing that could change the guard's answer
 * committed since (RefundsService; docs/performance.md).
 *
 * The database moves it, in a trigger on `refunds`, not the code paths: a new refund (any
 * insert), and a refund leaving `failed` or `canceled` (an ops retry putting it back in
 * line). A trigger also covers processes still running the previous release during a
 * rolling deploy (they lock the payment but know nothing of the counter) and any future path
 * that forgets it. Every other status change only moves an amount from reserved to refunded,
 * or frees it, and does not fire.
 *
 * Adding a NOT NULL column with a constant default rewrites nothing (instant on any size);
 * fillfactor 90 leaves room on new pages for the increments to be HOT updates.
 */
export class PaymentGuardVersion1763930000000 implements MigrationInterface {
  name = 'PaymentGuardVersion1763930000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE payments ADD COLUMN guard_version bigint NOT NULL DEFAULT 0`);
    await q.query(`ALTER TABLE payments SET (fillfactor = 90)`);
    // Inserts: once per statement and payment (a bulk insert of many refunds on one payment,
    // e.g. an import, moves it once instead of updating the payment row per refund).
    await q.query(`
      CREATE FUNCTION payments_guard_version_bump_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE payments p SET guard_version = p.guard_version + 1
          FROM (SELECT DISTINCT provider, payment_id FROM new_refunds) n
         WHERE p.provider = n.provider AND p.payment_id = n.payment_id;
        RETURN NULL;
      END $$`);
    await q.query(`
      CREATE TRIGGER refunds_insert_bumps_guard_version AFTER INSERT ON refunds
        REFERENCING NEW TABLE AS new_refunds
        FOR EACH STATEMENT EXECUTE FUNCTION payments_guard_version_bump_inserted()`);
    // Re-opened refunds (ops retry): per row, filtered by WHEN, so the worker's many other
    // status changes cost nothing here.
    await q.query(`
      CREATE FUNCTION payments_guard_version_bump_reopened() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE payments SET guard_version = guard_version + 1
         WHERE provider = NEW.provider AND payment_id = NEW.payment_id;
        RETURN NULL;
      END $$`);
    await q.query(`
      CREATE TRIGGER refunds_reopen_bumps_guard_version AFTER UPDATE OF status ON refunds
        FOR EACH ROW WHEN (OLD.status IN ('failed', 'canceled') AND NEW.status IS DISTINCT FROM OLD.status)
        EXECUTE FUNCTION payments_guard_version_bump_reopened()`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TRIGGER refunds_reopen_bumps_guard_version ON refunds`);
    await q.query(`DROP TRIGGER refunds_insert_bumps_guard_version ON refunds`);
    await q.query(`DROP FUNCTION payments_guard_version_bump_reopened()`);
    await q.query(`DROP FUNCTION payments_guard_version_bump_inserted()`);
    await q.query(`ALTER TABLE payments RESET (fillfactor)`);
    await q.query(`ALTER TABLE payments DROP COLUMN guard_version`);
  }
}
