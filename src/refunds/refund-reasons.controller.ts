import { Controller, Get, Query } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { IsIn, IsOptional } from 'class-validator';
import { ApiKeyAuth, ApiProblems } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { LeanAdapter } from '../providers/lean/lean.adapter.js';
import { LEAN_REASON_BY_REASON } from '../providers/lean/lean.transformers.js';
import { BINANCE_REASONS } from '../providers/binance-pay/binance-pay.transformers.js';
import { PROVIDERS, type ProviderName } from '../providers/provider.js';
import { REFUND_REASONS } from './refund-status.js';

export class RefundReasonsQuery {
  @ApiPropertyOptional({ enum: PROVIDERS, description: 'lean: also fetch Lean’s own reason list.' })
  @IsOptional()
  @IsIn(PROVIDERS as unknown as string[])
  provider?: ProviderName;
}

/** GET /v1/refund-reasons: the unified reasons and what each provider receives for them. */
@ApiTags('Refunds')
@ApiKeyAuth()
@Controller('v1/refund-reasons')
export class RefundReasonsController {
  constructor(private readonly lean: LeanAdapter) {}

  @Get()
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({ summary: 'Refund reasons', description: 'The unified reasons and what each provider receives for them.' })
  @ApiOkResponse({ description: 'The reasons.', schema: ref('RefundReasons') })
  @ApiProblems('validation_failed', 'provider_not_configured')
  async list(@Query() q: RefundReasonsQuery) {
    const unified = REFUND_REASONS.map((reason) => ({
      reason,
      binance_pay: BINANCE_REASONS[reason],
      lean: LEAN_REASON_BY_REASON[reason],
    }));
    if (q.provider !== 'lean') return { data: unified, providerReasons: [] };
    if (!this.lean.isEnabled()) throw new Problem('provider_not_configured', 'Provider lean is not configured on this service.');
    try {
      return { data: unified, providerReasons: await this.lean.reasons() };
    } catch {
      throw new Problem('service_unavailable', 'Could not fetch Lean refund reasons; try again shortly.', { retryAfterSeconds: 5 });
    }
  }
}
