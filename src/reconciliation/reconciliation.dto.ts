import { Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { PROVIDERS, type ProviderName } from '../providers/provider.js';

export const RUN_STATUSES = ['queued', 'running', 'completed', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** `POST /v1/reconciliations`; the window itself is checked by ReconciliationService.parseWindow. */
export class CreateReconciliationDto {
  @IsIn(PROVIDERS)
  provider!: ProviderName;

  @IsString()
  @MaxLength(64)
  from!: string;

  @IsString()
  @MaxLength(64)
  to!: string;
}

export class ListReconciliationsQuery {
  @IsOptional()
  @IsIn(PROVIDERS)
  provider?: ProviderName;

  @IsOptional()
  @IsIn(RUN_STATUSES)
  status?: RunStatus;

  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;
}
