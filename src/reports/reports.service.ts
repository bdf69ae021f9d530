import { Injectable } from '@nestjs/common';
import { formatAmount } from '../common/money.js';
import { FieldError, Problem } from '../common/problem.js';
import { Database } from '../database/database.js';
import { buildFilter } from './report-filter.js';
import type { SummaryQuery } from './reports.dto.js';

export type SummaryGroup = 'provider' | 'currency' | 'status' | 'merchant' | 'day';

/** What a summary can be grouped by: the SQL that groups, its JSON field, how it is printed. */
interface GroupDef {
  sql: string;
  field: string;
  out?: (col: string) => string;
}
const GROUPS: Record<SummaryGroup, GroupDef> = {
  provider: { sql: 'provider', field: 'provider' },
  currency: { sql: 'currency', field: 'currency' },
  status: { sql: 'status', field: 'status' },
  merchant: { sql: 'merchant_id', field: 'merchantId' },
  // The UTC calendar day of created_at: grouped as a date (the expression the migration's
  // statistics describe, so the planner hashes a few groups), printed as YYYY-MM-DD.
  day: { sql: `(created_at AT TIME ZONE 'UTC')::date`, field: 'day', out: (col: string) => `to_char(${col}, 'YYYY-MM-DD')` },
};
export const SUMMARY_GROUPS = Object.keys(GROUPS) as SummaryGroup[];
/** Contract §7's default. */
export const DEFAULT_GROUP_BY: SummaryGroup[] = ['provider', 'currency', 'status'];

export interface SummaryRow {
  provider?: string;
  currency?: string;
  status?: string;
  merchantId?: string;
  day?: string;
  count: number;
  amount: string;
  refundedAmount: string;
}

export function parseGroupBy(value: string | undefined): SummaryGroup[] {
  if (value === undefined) return DEFAULT_GROUP_BY;
  // groupBy= (empty): no grouping, one row with the totals.
  if (value.trim() === '') return [];
  const items = value.split(',').map((s) => s.trim());
  const errors: FieldError[] = [];
  const unknown = items.filter((s) => !(SUMMARY_GROUPS as string[]).includes(s));
  if (unknown.length) {
    errors.push({
      field: 'groupBy',
      message: `unknown groupBy ${unknown.map((u) => JSON.stringify(u)).join(', ')}; allowed: ${SUMMARY_GROUPS.join(', ')}`,
    });
  }
  if (new Set(items).size !== items.length) errors.push({ field: 'groupBy', message: 'groupBy lists a column twice' });
  if (errors.length) throw Problem.validation(errors);
  return items as SummaryGroup[];
}

@Injectable()
export class ReportsService {
  constructor(private readonly db: Database) {}

  /**
   * Counts and sums per group, computed by Postgres over numeric (exact whatever the
   * number of rows or decimals) and returned as canonical decimal strings: no value ever
   * passes through a float.
   */
  async summary(q: SummaryQuery): Promise<{ data: SummaryRow[] }> {
    const errors: FieldError[] = [];
    let groups: SummaryGroup[] = DEFAULT_GROUP_BY;
    try {
      groups = parseGroupBy(q.groupBy);
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      errors.push(...((err.extra.errors as FieldError[]) ?? []));
    }
    const filter = buildFilter(q, errors);
    const inner = groups.map((g, i) => `${GROUPS[g].sql} AS g${i}`);
    const outer = groups.map((g, i) => `${GROUPS[g].out?.(`g${i}`) ?? `g${i}`} AS g${i}`);
    const ordinals = groups.map((_, i) => String(i + 1));
    const rows = await this.db.query<Record<string, string | null>>(
      `SELECT ${[...outer, 'count', 'amount', 'refunded_amount'].join(', ')}
         FROM (SELECT ${[...inner, 'count(*) AS count', 'sum(amount) AS amount', 'sum(refunded_amount) AS refunded_amount'].join(', ')}
                 FROM refunds
                 ${filter.where}
                 ${groups.length ? `GROUP BY ${ordinals.join(', ')}` : ''}) s
        ${groups.length ? `ORDER BY ${ordinals.join(', ')}` : ''}`,
      filter.params,
    );
    return {
      data: rows.map((r) => {
        const out: Record<string, unknown> = {};
        groups.forEach((g, i) => (out[GROUPS[g].field] = r[`g${i}`]));
        // count(*) is a bigint (a string from node-postgres); far below 2^53 for any real table.
        out.count = Number(r.count);
        // sum() of no rows is NULL: the empty total is 0.
        out.amount = formatAmount(r.amount ?? '0');
        out.refundedAmount = formatAmount(r.refunded_amount ?? '0');
        return out as unknown as SummaryRow;
      }),
    };
  }
}
