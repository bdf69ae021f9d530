import { DynamicModule, Module } from '@nestjs/common';
import { registerQueue } from '../processing/queues.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { ReconciliationController } from './reconciliation.controller.js';
import { ReconciliationProcessor } from './reconciliation.processor.js';
import { ReconciliationQueueService } from './reconciliation-queue.service.js';
import { ReconciliationRunner } from './reconciliation-runner.service.js';
import { RECONCILIATION_QUEUE, ReconciliationSettings } from './reconciliation-settings.js';
import { ReconciliationService } from './reconciliation.service.js';
import { ReconciliationSweeper } from './reconciliation-sweeper.js';

/**
 * Reconciliation runs (contract §7). The API and the queue producer exist in every role; the
 * run worker and the sweeper/scheduler only where ROLE runs workers. Relies on
 * ProcessingModule's BullModule root (Redis connection) and its own prefix (registerQueue).
 */
@Module({})
export class ReconciliationModule {
  static register(opts: { workers: boolean }): DynamicModule {
    return {
      module: ReconciliationModule,
      imports: [ProvidersModule, ...(opts.workers ? [registerQueue(RECONCILIATION_QUEUE)] : [])],
      controllers: [ReconciliationController],
      providers: [
        { provide: ReconciliationSettings, useFactory: () => ReconciliationSettings.fromEnv(process.env) },
        ReconciliationQueueService,
        ReconciliationService,
        ...(opts.workers ? [ReconciliationRunner, ReconciliationProcessor, ReconciliationSweeper] : []),
      ],
    };
  }
}
