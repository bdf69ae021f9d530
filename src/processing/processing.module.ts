import { BullModule } from '@nestjs/bullmq';
import { DynamicModule, Module } from '@nestjs/common';
import { AppConfig } from '../config/config.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { REFUND_QUEUES, redisOptions } from './queues.js';
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
          inject: [AppConfig],
          useFactory: (cfg: AppConfig) => ({
            prefix: cfg.queuePrefix,
            // Workers block on Redis and must wait out reconnects (BullMQ requires null here).
            connection: { ...redisOptions(cfg.redisUrl), maxRetriesPerRequest: null },
          }),
        }),
        ...REFUND_QUEUES.map((name) =>
          // Workers take their connection from these (root options); producers are in RefundQueueService.
          BullModule.registerQueue({ name }),
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
