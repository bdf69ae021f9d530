import { IsISO8601, IsOptional, IsString, Length, Matches } from 'class-validator';

/**
 * Query strings of the finance reports (refunds-api.md §7). Unknown parameters are
 * rejected by the global validation pipe (400 validation_failed). Lists (provider, status,
 * groupBy) are comma-separated and checked by the service against the known values.
 */
export class ReportFilterQuery {
  /** created_at >= from (ISO 8601, inclusive). */
  @IsOptional()
  @IsISO8601({ strict: true })
  from?: string;

  /** created_at < to (ISO 8601, exclusive). */
  @IsOptional()
  @IsISO8601({ strict: true })
  to?: string;

  /** One provider or a comma-separated list. */
  @IsOptional()
  @IsString()
  @Length(1, 100)
  provider?: string;

  /** One status or a comma-separated list. */
  @IsOptional()
  @IsString()
  @Length(1, 200)
  status?: string;

  @IsOptional()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/, { message: 'merchantId must be a merchant id' })
  merchantId?: string;
}

export class SummaryQuery extends ReportFilterQuery {
  /** Comma-separated subset of provider, currency, status, merchant, day; empty: one total row. */
  @IsOptional()
  @IsString()
  @Length(0, 100)
  groupBy?: string;
}

export class ExportQuery extends ReportFilterQuery {}
