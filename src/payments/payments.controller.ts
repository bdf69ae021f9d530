import { Controller, Get, Param } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { Auth, type AuthContext, merchantScope, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { isProviderName } from '../providers/provider.js';
import { ApiKeyAuth, ApiProblems } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { PaymentsService } from './payments.service.js';
import { ProvidersService } from '../providers/providers.service.js';

@ApiTags('Payments')
@ApiKeyAuth()
@Controller('v1/payments')
export class PaymentsController {
  constructor(
    private readonly payments: PaymentsService,
    private readonly providers: ProvidersService,
  ) {}

  @Get(':provider/:paymentId')
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({
    summary: 'A payment and its refund balance',
    description: 'Refunded, reserved (refunds in flight) and still refundable amounts. Known once a refund referenced it; another merchant’s payment is 404.',
  })
  @ApiParam({ name: 'provider', enum: ['binance_pay', 'cobo', 'lean'] })
  @ApiParam({ name: 'paymentId', description: 'The provider’s payment id.', example: '383729303729303' })
  @ApiOkResponse({ description: 'The payment.', schema: ref('Payment') })
  @ApiProblems('payment_not_found')
  view(@Auth() auth: AuthContext, @Param('provider') provider: string, @Param('paymentId') paymentId: string) {
    if (!isProviderName(provider)) throw new Problem('payment_not_found', `Unknown provider ${provider}.`);
    const normalize = this.providers.find(provider)?.normalizePaymentId?.bind(this.providers.find(provider));
    return this.payments.view(provider, normalize ? normalize(paymentId) : paymentId, merchantScope(auth));
  }
}
