import { Controller, Get } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiServiceUnavailableResponse, ApiTags } from '@nestjs/swagger';
import { HealthCheck, HealthCheckService, HealthIndicatorService, TypeOrmHealthIndicator } from '@nestjs/terminus';
import { RefundQueueService } from '../processing/refund-queue.service.js';

/** Liveness says the process runs; readiness says it can serve (Postgres and Redis answer). */
@ApiTags('Operations')
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly typeorm: TypeOrmHealthIndicator,
    private readonly indicators: HealthIndicatorService,
    private readonly queues: RefundQueueService,
  ) {}

  @Get('live')
  @ApiOperation({ summary: 'Liveness (public)', description: 'The process runs.' })
  @ApiOkResponse({ description: 'Alive.', schema: { type: 'object', properties: { status: { type: 'string', enum: ['ok'] } } } })
  live() {
    return { status: 'ok' };
  }

  @Get('ready')
  @ApiOperation({ summary: 'Readiness (public)', description: 'Postgres and Redis answer within 1.5 s each.' })
  @ApiOkResponse({
    description: 'Ready (Terminus health check result).',
    schema: { type: 'object', additionalProperties: true, example: { status: 'ok', info: { postgres: { status: 'up' }, redis: { status: 'up' } }, error: {}, details: {} } },
  })
  @ApiServiceUnavailableResponse({
    description: 'A dependency is down (Terminus health check result).',
    schema: { type: 'object', additionalProperties: true, example: { status: 'error', info: { postgres: { status: 'up' } }, error: { redis: { status: 'down' } } } },
  })
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
