import { Module } from '@nestjs/common';
import { PaymentsController } from '../payments/payments.controller.js';
import { PaymentsService } from '../payments/payments.service.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { RefundsController } from './refunds.controller.js';
import { RefundReasonsController } from './refund-reasons.controller.js';
import { RefundsService } from './refunds.service.js';
import { RefundActionsService } from './refund-actions.service.js';

@Module({
  imports: [ProvidersModule],
  controllers: [RefundsController, PaymentsController, RefundReasonsController],
  providers: [RefundsService, RefundActionsService, PaymentsService],
})
export class RefundsModule {}
