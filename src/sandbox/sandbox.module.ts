import { DynamicModule, Module } from '@nestjs/common';
import { BinancePayEmulatorController, BinancePayMerchantHttp } from './binance-pay/binance-pay.emulator.controller.js';
import { BinancePayEmulator } from './binance-pay/binance-pay.emulator.js';
import { BinancePayWebhooks } from './binance-pay/binance-pay.webhooks.js';
import { CoboApiHttp, CoboEmulatorController } from './cobo/cobo.emulator.controller.js';
import { CoboEmulator } from './cobo/cobo.emulator.js';
import { CoboWebhooks } from './cobo/cobo.webhooks.js';
import { SandboxBodyErrors } from './sandbox-body-errors.js';
import { SandboxCredentials } from './sandbox-credentials.js';
import { SANDBOX_PAYMENT_EMULATORS, SandboxPaymentEmulator } from './sandbox-payment-emulator.js';
import { SandboxPaymentsController } from './sandbox-payments.controller.js';
import { SandboxStore } from './sandbox-store.js';
import { SANDBOX_OPTIONS, SandboxOptions } from './sandbox-options.js';

/**
 * The built-in provider emulators (refunds-api.md §9). Needs the global Database (and
 * AppConfig) providers. `serveHttp: true` mounts the HTTP surface and runs the
 * settle/webhook loop; `false` (worker-only processes) provides just SandboxCredentials.
 */
@Module({})
export class SandboxModule {
  static register(opts: SandboxOptions): DynamicModule {
    const core = [SandboxStore, SandboxCredentials, { provide: SANDBOX_OPTIONS, useValue: opts }];
    if (!opts.serveHttp) {
      return { module: SandboxModule, providers: core, exports: [SandboxCredentials] };
    }
    return {
      module: SandboxModule,
      controllers: [SandboxPaymentsController, BinancePayEmulatorController, CoboEmulatorController],
      providers: [
        ...core,
        BinancePayEmulator,
        BinancePayMerchantHttp,
        BinancePayWebhooks,
        CoboEmulator,
        CoboApiHttp,
        CoboWebhooks,
        SandboxBodyErrors,
        {
          // Add the Lean emulator here when it exists.
          provide: SANDBOX_PAYMENT_EMULATORS,
          useFactory: (binancePay: BinancePayEmulator, cobo: CoboEmulator): SandboxPaymentEmulator[] => [binancePay, cobo],
          inject: [BinancePayEmulator, CoboEmulator],
        },
      ],
      exports: [SandboxCredentials],
    };
  }
}
