import { DynamicModule, Module } from '@nestjs/common';
import { LeanApiEmulatorController, LeanAuthEmulatorController } from './lean.controller.js';
import { LeanSandboxCredentials } from './lean.credentials.js';
import { LeanSandboxEmulator } from './lean.emulator.js';
import { LeanSandboxHttp, LeanSandboxHttpErrors } from './lean.http.js';
import { LeanSandboxPayments } from './lean.payments.js';
import { LEAN_SANDBOX_OPTIONS, LeanSandboxOptions, LeanSandboxStore } from './lean.store.js';
import { LeanSandboxWorker } from './lean.worker.js';

/**
 * The Lean Pay-by-Bank emulator (refunds-api.md §9, providers.md §3-4): the API under
 * `/sandbox/lean`, the OAuth2 host under `/sandbox/lean-auth`. Needs only the global
 * Database and AppConfig providers; creates its own tables in schema `sandbox`.
 *
 * `serveHttp: true` mounts the HTTP surface and runs the settle/webhook loop; `false`
 * (worker-only processes) provides just the credentials and the seeded-payment access.
 * Either way it exports LeanSandboxCredentials and LeanSandboxPayments.
 */
@Module({})
export class LeanSandboxModule {
  static register(opts: LeanSandboxOptions): DynamicModule {
    const core = [
      { provide: LEAN_SANDBOX_OPTIONS, useValue: opts },
      LeanSandboxStore,
      LeanSandboxCredentials,
      LeanSandboxPayments,
    ];
    const exports = [LeanSandboxCredentials, LeanSandboxPayments];
    if (!opts.serveHttp) return { module: LeanSandboxModule, providers: core, exports };
    return {
      module: LeanSandboxModule,
      controllers: [LeanAuthEmulatorController, LeanApiEmulatorController],
      providers: [...core, LeanSandboxEmulator, LeanSandboxHttp, LeanSandboxHttpErrors, LeanSandboxWorker],
      exports,
    };
  }
}
