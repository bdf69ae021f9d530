import { Controller, Get, Param } from '@nestjs/common';
import { Auth, type AuthContext, merchantScope, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { isProviderName } from '../providers/provider.js';
import { PaymentsService } from './payments.service.js';
import { ProvidersService } from '../providers/providers.service.js';

@Controller('v1/payments')
export class PaymentsController {
  constructor(
    private readonly payments: PaymentsService,
    private readonly providers: ProvidersService,
  ) {}

  @Get(':provider/:paymentId')
  @Roles('merchant', 'ops', 'finance')
  view(@Auth() auth: AuthContext, @Param('provider') provider: string, @Param('paymentId') paymentId: string) {
    if (!isProviderName(provider)) throw new Problem('payment_not_found', `Unknown provider ${provider}.`);
    const normalize = this.providers.find(provider)?.normalizePaymentId?.bind(this.providers.find(provider));
    return this.payments.view(provider, normalize ? normalize(paymentId) : paymentId, merchantScope(auth));
  }
}
