import { BullModule } from '@nestjs/bullmq';
import { DynamicModule, Module } from '@nestjs/common';
import { AppConfig } from '../config/config.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { REFUND_QUEUES, registerQueue, WorkerRedis } from './queues.js';
import { AttemptsService } from './attempts.service.js';
import { RefundOutcomeService } from './refund-outcome.service.js';
import { RecoverySweeper } from './recovery-sweeper.js';
import { RefundQueueService } from './refund-queue.service.js';
import { RefundWorkerService } from './refund-worker.service.js';
import { BinancePayRefundProcessor, CoboRefundProcessor, LeanRefundProcessor } from './refund.processor.js';

/**
 * Queues are registered in every role (the API enqueues); workers and the sweeper only
 * where ROLE runs workers.
 */
@Module({})
export class ProcessingModule {
  static register(opts: { workers: boolean }): DynamicModule {
    return {
      module: ProcessingModule,
      global: true,
      imports: [
        ProvidersModule,
        BullModule.forRootAsync({
          inject: [AppConfig, WorkerRedis],
          useFactory: (cfg: AppConfig, redis: WorkerRedis) => ({
            // Each queue registers its own prefix (registerQueue); this is the default.
            prefix: cfg.queuePrefix,
            connection: redis.connection,
          }),
        }),
        ...REFUND_QUEUES.map((name) =>
          // Workers take their connection from these (root options); producers are in RefundQueueService.
          registerQueue(name),
        ),
      ],
      providers: [
        RefundQueueService,
        RefundWorkerService,
        AttemptsService,
        RefundOutcomeService,
        ...(opts.workers ? [RecoverySweeper, BinancePayRefundProcessor, CoboRefundProcessor, LeanRefundProcessor] : []),
      ],
      exports: [RefundQueueService, RefundWorkerService, AttemptsService, RefundOutcomeService],
    };
  }
}
