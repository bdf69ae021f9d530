import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsISO8601, IsOptional, IsString, Length, Matches } from 'class-validator';

/**
 * Query strings of the finance reports (refunds-api.md §7). Unknown parameters are
 * rejected by the global validation pipe (400 validation_failed). Lists (provider, status,
 * groupBy) are comma-separated and checked by the service against the known values.
 */
export class ReportFilterQuery {
  /** created_at >= from (ISO 8601, inclusive). */
  @ApiPropertyOptional({ description: 'created_at >= from (ISO 8601; a date or an offset-less time is UTC).', example: '2026-11-01' })
  @IsOptional()
  @IsISO8601({ strict: true })
  from?: string;

  /** created_at < to (ISO 8601, exclusive). */
  @ApiPropertyOptional({ description: 'created_at < to (ISO 8601).', example: '2026-12-01' })
  @IsOptional()
  @IsISO8601({ strict: true })
  to?: string;

  /** One provider or a comma-separated list. */
  @ApiPropertyOptional({ description: 'One provider or a comma-separated list.', example: 'binance_pay,cobo' })
  @IsOptional()
  @IsString()
  @Length(1, 100)
  provider?: string;

  /** One status or a comma-separated list. */
  @ApiPropertyOptional({ description: 'One status or a comma-separated list.', example: 'succeeded' })
  @IsOptional()
  @IsString()
  @Length(1, 200)
  status?: string;

  @ApiPropertyOptional({ pattern: '^[A-Za-z0-9_.-]{1,64}$', example: 'M1001' })
  @IsOptional()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/, { message: 'merchantId must be a merchant id' })
  merchantId?: string;
}

export class SummaryQuery extends ReportFilterQuery {
  /** Comma-separated subset of provider, currency, status, merchant, day; empty: one total row. */
  @ApiPropertyOptional({ description: 'Comma-separated subset of provider, currency, status, merchant, day; empty: one total row.', example: 'provider,currency,status' })
  @IsOptional()
  @IsString()
  @Length(0, 100)
  groupBy?: string;
}

export class ExportQuery extends ReportFilterQuery {}
