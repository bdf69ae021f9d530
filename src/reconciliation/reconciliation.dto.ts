import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { PROVIDERS, type ProviderName } from '../providers/provider.js';

export const RUN_STATUSES = ['queued', 'running', 'completed', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** `POST /v1/reconciliations`; the window itself is checked by ReconciliationService.parseWindow. */
export class CreateReconciliationDto {
  @ApiProperty({ enum: PROVIDERS })
  @IsIn(PROVIDERS)
  provider!: ProviderName;

  @ApiProperty({ maxLength: 64, description: 'ISO 8601 with an offset, or a bare date (UTC midnight); inclusive.', example: '2026-11-01' })
  @IsString()
  @MaxLength(64)
  from!: string;

  @ApiProperty({ maxLength: 64, description: 'ISO 8601 with an offset, or a bare date (UTC midnight); exclusive.', example: '2026-11-02' })
  @IsString()
  @MaxLength(64)
  to!: string;
}

export class ListReconciliationsQuery {
  @ApiPropertyOptional({ enum: PROVIDERS })
  @IsOptional()
  @IsIn(PROVIDERS)
  provider?: ProviderName;

  @ApiPropertyOptional({ enum: RUN_STATUSES })
  @IsOptional()
  @IsIn(RUN_STATUSES)
  status?: RunStatus;

  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 100, default: 20 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;
}
