import { DynamicModule, Module } from '@nestjs/common';
import { BinancePayEmulatorController, BinancePayMerchantHttp } from './binance-pay/binance-pay.emulator.controller.js';
import { BinancePayEmulator } from './binance-pay/binance-pay.emulator.js';
import { BinancePayWebhooks } from './binance-pay/binance-pay.webhooks.js';
import { SandboxBodyErrors } from './sandbox-body-errors.js';
import { SandboxCredentials } from './sandbox-credentials.js';
import { SANDBOX_PAYMENT_EMULATORS, SandboxPaymentEmulator } from './sandbox-payment-emulator.js';
import { SandboxPaymentsController } from './sandbox-payments.controller.js';
import { SandboxStore } from './sandbox-store.js';

/**
 * The built-in provider emulators (refunds-api.md §9). Needs the global Database (and
 * AppConfig) providers. `serveHttp: true` mounts the HTTP surface and runs the
 * settle/webhook loop; `false` (worker-only processes) provides just SandboxCredentials.
 */
@Module({})
export class SandboxModule {
  static register(opts: { serveHttp: boolean }): DynamicModule {
    const core = [SandboxStore, SandboxCredentials];
    if (!opts.serveHttp) {
      return { module: SandboxModule, providers: core, exports: [SandboxCredentials] };
    }
    return {
      module: SandboxModule,
      controllers: [SandboxPaymentsController, BinancePayEmulatorController],
      providers: [
        ...core,
        BinancePayEmulator,
        BinancePayMerchantHttp,
        BinancePayWebhooks,
        SandboxBodyErrors,
        {
          // Add the Cobo and Lean emulators here when they exist.
          provide: SANDBOX_PAYMENT_EMULATORS,
          useFactory: (binancePay: BinancePayEmulator): SandboxPaymentEmulator[] => [binancePay],
          inject: [BinancePayEmulator],
        },
      ],
      exports: [SandboxCredentials],
    };
  }
}
