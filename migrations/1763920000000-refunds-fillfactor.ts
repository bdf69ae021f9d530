import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Room for HOT updates in `refunds` (docs/performance.md). A refund row is updated about ten
 * times in its life (lease taken and released per worker step, attempt counter, provider
 * facts, status changes); the lease and counter updates touch no indexed column, so Postgres
 * can update them in place (HOT: no new entry in any of the table's twelve indexes) — but
 * only when the row's page has free space, and with the default fillfactor of 100 the pages
 * of new refunds are packed full by the inserts around them. 80 leaves a fifth of each new
 * page for those versions. Only pages written from now on are affected (no table rewrite,
 * no long lock): the change is instant on a table of any size.
 */
export class RefundsFillfactor1763920000000 implements MigrationInterface {
  name = 'RefundsFillfactor1763920000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE refunds SET (fillfactor = 80)`);
    await q.query(`ALTER TABLE refund_attempts SET (fillfactor = 90)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE refund_attempts RESET (fillfactor)`);
    await q.query(`ALTER TABLE refunds RESET (fillfactor)`);
  }
}
