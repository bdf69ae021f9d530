import { Controller, Get, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { AppConfig } from '../config/config.js';
import { METRICS_UNAUTHORIZED, metricsAccessAllowed } from './metrics-auth.js';
import { MetricsService } from './metrics.service.js';

/**
 * GET /metrics in the Prometheus text format, on API processes (ROLE=api|all). Listed as a
 * public prefix in ApiKeyGuard: API keys are not for scrapers; METRICS_TOKEN, when set,
 * is checked here instead.
 */
@Controller('metrics')
export class MetricsController {
  constructor(
    private readonly metrics: MetricsService,
    private readonly cfg: AppConfig,
  ) {}

  @Get()
  async scrape(@Req() req: Request, @Res() res: Response): Promise<void> {
    if (!metricsAccessAllowed(this.cfg.metrics.token, req.headers.authorization)) {
      res.status(METRICS_UNAUTHORIZED.status).set(METRICS_UNAUTHORIZED.headers).send(METRICS_UNAUTHORIZED.body);
      return;
    }
    const body = await this.metrics.registry.metrics();
    res.status(200).set({ 'Content-Type': this.metrics.registry.contentType, 'Cache-Control': 'no-store' }).send(body);
  }
}
