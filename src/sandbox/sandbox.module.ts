import { DynamicModule, Module } from '@nestjs/common';
import { BinancePayEmulatorController, BinancePayMerchantHttp } from './binance-pay/binance-pay.emulator.controller.js';
import { BinancePayEmulator } from './binance-pay/binance-pay.emulator.js';
import { BinancePaySettlement, BinancePayWebhooks } from './binance-pay/binance-pay.webhooks.js';
import { CoboApiHttp, CoboEmulatorController } from './cobo/cobo.emulator.controller.js';
import { CoboEmulator } from './cobo/cobo.emulator.js';
import { CoboWebhooks } from './cobo/cobo.webhooks.js';
import { SandboxBodyErrors } from './sandbox-body-errors.js';
import { SandboxCredentials } from './sandbox-credentials.js';
import { SANDBOX_PAYMENT_EMULATORS, SandboxPaymentEmulator } from './sandbox-payment-emulator.js';
import { SandboxPaymentsController } from './sandbox-payments.controller.js';
import { SandboxStore } from './sandbox-store.js';
import { SANDBOX_OPTIONS, SandboxOptions } from './sandbox-options.js';
import { LeanSandboxModule } from './lean/lean.module.js';
import { LeanSandboxPayments } from './lean/lean.payments.js';

/**
 * The built-in provider emulators (refunds-api.md §9). Needs the global Database (and
 * AppConfig) providers. `serveHttp: true` mounts the HTTP surface and runs the
 * settlement and webhook loops; `false` (worker-only processes) provides just SandboxCredentials.
 */
@Module({})
export class SandboxModule {
  static register(opts: SandboxOptions): DynamicModule {
    const core = [SandboxStore, SandboxCredentials, { provide: SANDBOX_OPTIONS, useValue: opts }];
    const lean = LeanSandboxModule.register({
      serveHttp: opts.serveHttp,
      defaultWebhookUrl: opts.webhookBaseUrl ? `${opts.webhookBaseUrl}/webhooks/lean` : null,
    });
    if (!opts.serveHttp) {
      return { module: SandboxModule, imports: [lean], providers: core, exports: [SandboxCredentials, LeanSandboxModule] };
    }
    return {
      module: SandboxModule,
      imports: [lean],
      controllers: [SandboxPaymentsController, BinancePayEmulatorController, CoboEmulatorController],
      providers: [
        ...core,
        BinancePayEmulator,
        BinancePayMerchantHttp,
        BinancePayWebhooks,
        BinancePaySettlement,
        CoboEmulator,
        CoboApiHttp,
        CoboWebhooks,
        SandboxBodyErrors,
        {
          provide: SANDBOX_PAYMENT_EMULATORS,
          useFactory: (binancePay: BinancePayEmulator, cobo: CoboEmulator, lean: LeanSandboxPayments): SandboxPaymentEmulator[] => [
            binancePay,
            cobo,
            lean,
          ],
          inject: [BinancePayEmulator, CoboEmulator, LeanSandboxPayments],
        },
      ],
      exports: [SandboxCredentials, LeanSandboxModule],
    };
  }
}
