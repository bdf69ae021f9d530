import { FieldError, Problem } from '../common/problem.js';
import { isProviderName } from '../providers/provider.js';
import { isRefundStatus } from '../refunds/refund-status.js';
import type { ReportFilterQuery } from './reports.dto.js';

/** A WHERE clause over `refunds` (or `finance_refunds`) and its parameters. */
export interface SqlFilter {
  where: string;
  params: unknown[];
}

/**
 * Date-only or date-time, with or without an offset. Anything else the ISO 8601 validator
 * lets through (week dates, ordinal dates) is refused rather than guessed.
 */
const TIMESTAMP_RE = /^(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

/**
 * An instant as Postgres should read it. Finance works in UTC: a date or a time without an
 * offset means UTC, never the database session's time zone.
 */
export function normaliseInstant(value: string, field: string, errors: FieldError[]): string | undefined {
  const m = TIMESTAMP_RE.exec(value);
  if (!m) {
    errors.push({ field, message: `${field} must be an ISO 8601 date or date-time such as 2025-01-31 or 2025-01-31T12:00:00Z` });
    return undefined;
  }
  const [, date, time, offset] = m;
  const text = `${date}T${time ?? '00:00:00'}${offset ?? 'Z'}`;
  const day = new Date(`${date}T00:00:00Z`);
  if (Number.isNaN(day.getTime()) || day.toISOString().slice(0, 10) !== date || Number.isNaN(Date.parse(text))) {
    errors.push({ field, message: `${field} is not a valid date` });
    return undefined;
  }
  return text;
}

function list(value: string | undefined, field: string, valid: (v: string) => boolean, errors: FieldError[]): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim());
  const bad = items.filter((s) => !valid(s));
  if (bad.length) errors.push({ field, message: `unknown ${field} ${bad.map((b) => JSON.stringify(b)).join(', ')}` });
  return [...new Set(items)];
}

/**
 * The filters both reports share: created_at in [from, to), provider(s), status(es),
 * merchant. Columns are unqualified, so the clause fits `refunds` and `finance_refunds`
 * (whose created_at, provider, status and merchant_id are the refund's).
 */
export function buildFilter(q: ReportFilterQuery, errors: FieldError[] = []): SqlFilter {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const add = (clause: (p: string) => string, value: unknown) => {
    params.push(value);
    clauses.push(clause(`$${params.length}`));
  };
  const from = q.from !== undefined ? normaliseInstant(q.from, 'from', errors) : undefined;
  const to = q.to !== undefined ? normaliseInstant(q.to, 'to', errors) : undefined;
  if (from && to && Date.parse(from) > Date.parse(to)) errors.push({ field: 'to', message: 'to must not be before from' });
  const providers = list(q.provider, 'provider', isProviderName, errors);
  const statuses = list(q.status, 'status', isRefundStatus, errors);
  if (errors.length) throw Problem.validation(errors);

  if (from) add((p) => `created_at >= ${p}::timestamptz`, from);
  if (to) add((p) => `created_at < ${p}::timestamptz`, to);
  if (providers) add((p) => `provider = ANY(${p}::text[])`, providers);
  if (statuses) add((p) => `status = ANY(${p}::text[])`, statuses);
  if (q.merchantId) add((p) => `merchant_id = ${p}`, q.merchantId);
  return { where: clauses.length ? `WHERE ${clauses.join(' AND ')}` : '', params };
}
