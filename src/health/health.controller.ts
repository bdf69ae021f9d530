import { Controller, Get } from '@nestjs/common';
import { HealthCheck, HealthCheckService, HealthIndicatorService, TypeOrmHealthIndicator } from '@nestjs/terminus';
import { RefundQueueService } from '../processing/refund-queue.service.js';

/** Liveness says the process runs; readiness says it can serve (Postgres and Redis answer). */
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly typeorm: TypeOrmHealthIndicator,
    private readonly indicators: HealthIndicatorService,
    private readonly queues: RefundQueueService,
  ) {}

  @Get('live')
  live() {
    return { status: 'ok' };
  }

  @Get('ready')
  @HealthCheck()
  ready() {
    return this.health.check([
      () => this.typeorm.pingCheck('postgres').withTimeout(1500),
      () =>
        this.indicators
          .check('redis')
          .attempt(async () => {
            // Any round trip will do; the producer connection fails fast while Redis is away.
            await this.queues.queue('binance_pay').getJobCounts('waiting');
          })
          .withTimeout(1500),
    ]);
  }
}
