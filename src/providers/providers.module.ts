import { HttpModule } from '@nestjs/axios';
import { Module } from '@nestjs/common';
import { RefundStateService } from '../refunds/refund-state.service.js';
import { BinancePayAdapter } from './binance-pay/binance-pay.adapter.js';
import { BinancePayClient } from './binance-pay/binance-pay.client.js';
import { BinancePayCertificates, BinancePayWebhookController } from './binance-pay/binance-pay.webhook.js';
import { CoboAdapter } from './cobo/cobo.adapter.js';
import { CoboClient } from './cobo/cobo.client.js';
import { CoboWebhookController } from './cobo/cobo.webhook.js';
import { LeanAdapter } from './lean/lean.adapter.js';
import { LeanClient } from './lean/lean.client.js';
import { LeanWebhookController } from './lean/lean.webhook.js';
import { REFUND_PROVIDERS, RefundProvider } from './provider.js';
import { ProviderHttp } from './provider-http.js';
import { ProvidersService } from './providers.service.js';

@Module({
  imports: [HttpModule],
  controllers: [BinancePayWebhookController, CoboWebhookController, LeanWebhookController],
  providers: [
    ProviderHttp,
    RefundStateService,
    BinancePayClient,
    BinancePayAdapter,
    BinancePayCertificates,
    CoboClient,
    CoboAdapter,
    LeanClient,
    LeanAdapter,
    {
      provide: REFUND_PROVIDERS,
      inject: [BinancePayAdapter, CoboAdapter, LeanAdapter],
      useFactory: (...adapters: RefundProvider[]) => adapters,
    },
    ProvidersService,
  ],
  exports: [ProvidersService, RefundStateService, LeanAdapter, LeanClient],
})
export class ProvidersModule {}
