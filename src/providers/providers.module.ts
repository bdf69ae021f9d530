import { HttpModule } from '@nestjs/axios';
import { Module } from '@nestjs/common';
import { RefundStateService } from '../refunds/refund-state.service.js';
import { BinancePayAdapter } from './binance-pay/binance-pay.adapter.js';
import { BinancePayClient } from './binance-pay/binance-pay.client.js';
import { BinancePayCertificates, BinancePayWebhookController } from './binance-pay/binance-pay.webhook.js';
import { CoboAdapter } from './cobo/cobo.adapter.js';
import { CoboClient } from './cobo/cobo.client.js';
import { CoboWebhookController } from './cobo/cobo.webhook.js';
import { REFUND_PROVIDERS, RefundProvider } from './provider.js';
import { ProviderHttp } from './provider-http.js';
import { ProvidersService } from './providers.service.js';

@Module({
  imports: [HttpModule],
  controllers: [BinancePayWebhookController, CoboWebhookController],
  providers: [
    ProviderHttp,
    RefundStateService,
    BinancePayClient,
    BinancePayAdapter,
    BinancePayCertificates,
    CoboClient,
    CoboAdapter,
    {
      provide: REFUND_PROVIDERS,
      inject: [BinancePayAdapter, CoboAdapter],
      useFactory: (...adapters: RefundProvider[]) => adapters,
    },
    ProvidersService,
  ],
  exports: [ProvidersService, RefundStateService],
})
export class ProvidersModule {}
