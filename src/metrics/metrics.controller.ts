import { Controller, Get, Req, Res } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiProduces, ApiTags, ApiUnauthorizedResponse } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppConfig } from '../config/config.js';
import { METRICS_UNAUTHORIZED, metricsAccessAllowed } from './metrics-auth.js';
import { MetricsService } from './metrics.service.js';

/**
 * GET /metrics in the Prometheus text format, on API processes (ROLE=api|all). Listed as a
 * public prefix in ApiKeyGuard: API keys are not for scrapers; METRICS_TOKEN, when set,
 * is checked here instead.
 */
@ApiTags('Operations')
@Controller('metrics')
export class MetricsController {
  constructor(
    private readonly metrics: MetricsService,
    private readonly cfg: AppConfig,
  ) {}

  @Get()
  @ApiOperation({
    summary: 'Prometheus metrics',
    description: 'Public unless METRICS_TOKEN is set; then `Authorization: Bearer <METRICS_TOKEN>` (not an API key) is required.',
  })
  @ApiProduces('text/plain')
  @ApiOkResponse({ description: 'Prometheus text format.', content: { 'text/plain': { schema: { type: 'string' }, example: 'refunds_created_total{provider="binance_pay",status="queued"} 3\n' } } })
  @ApiUnauthorizedResponse({ description: 'METRICS_TOKEN is set and the request did not carry it.' })
  async scrape(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    if (!metricsAccessAllowed(this.cfg.metrics.token, req.headers.authorization)) {
      res.status(METRICS_UNAUTHORIZED.status).headers(METRICS_UNAUTHORIZED.headers).send(METRICS_UNAUTHORIZED.body);
      return;
    }
    const body = await this.metrics.registry.metrics();
    res.status(200).headers({ 'Content-Type': this.metrics.registry.contentType, 'Cache-Control': 'no-store' }).send(body);
  }
}
