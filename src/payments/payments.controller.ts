import { Controller, Get, Param } from '@nestjs/common';
import { Auth, type AuthContext, merchantScope, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { isProviderName } from '../providers/provider.js';
import { PaymentsService } from './payments.service.js';

@Controller('v1/payments')
export class PaymentsController {
  constructor(private readonly payments: PaymentsService) {}

  @Get(':provider/:paymentId')
  @Roles('merchant', 'ops', 'finance')
  view(@Auth() auth: AuthContext, @Param('provider') provider: string, @Param('paymentId') paymentId: string) {
    if (!isProviderName(provider)) throw new Problem('payment_not_found', `Unknown provider ${provider}.`);
    return this.payments.view(provider, paymentId, merchantScope(auth));
  }
}
