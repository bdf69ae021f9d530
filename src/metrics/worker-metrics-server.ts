import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AppConfig } from '../config/config.js';
import { METRICS_UNAUTHORIZED, metricsAccessAllowed } from './metrics-auth.js';
import { MetricsService } from './metrics.service.js';

/**
 * A ROLE=worker process has no HTTP API, so it serves its metrics on a tiny node:http server
 * of its own: METRICS_HOST:METRICS_PORT (default 127.0.0.1:9464; METRICS_PORT=0 disables it),
 * GET /metrics only, with the same METRICS_TOKEN rule as the API. If the port is taken the
 * worker logs an error and keeps processing refunds: metrics are not worth stopping payouts.
 */
@Injectable()
export class WorkerMetricsServer implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('WorkerMetricsServer');
  private server?: http.Server;

  constructor(
    private readonly metrics: MetricsService,
    private readonly cfg: AppConfig,
  ) {}

  /** The bound port (useful when METRICS_PORT picks a free one); undefined when not listening. */
  get port(): number | undefined {
    const address = this.server?.address();
    return address && typeof address === 'object' ? (address as AddressInfo).port : undefined;
  }

  async onApplicationBootstrap(): Promise<void> {
    const { port, host } = this.cfg.metrics;
    if (port === 0) return;
    const server = http.createServer((req, res) => void this.handle(req, res));
    server.requestTimeout = 10_000;
    server.headersTimeout = 5_000;
    server.keepAliveTimeout = 5_000;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.logger.error({ host, port, err: (err as Error).message }, 'worker metrics server could not listen; metrics are not served');
      return;
    }
    server.on('error', (err) => this.logger.warn({ err: err.message }, 'worker metrics server error'));
    this.server = server;
    this.logger.log({ host, port: this.port }, 'worker metrics on /metrics');
  }

  async onApplicationShutdown(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '');
      if (path !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
        return;
      }
      if (!metricsAccessAllowed(this.cfg.metrics.token, req.headers.authorization)) {
        res.writeHead(METRICS_UNAUTHORIZED.status, METRICS_UNAUTHORIZED.headers).end(METRICS_UNAUTHORIZED.body);
        return;
      }
      const body = await this.metrics.registry.metrics();
      res.writeHead(200, { 'Content-Type': this.metrics.registry.contentType, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'metrics scrape failed');
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('metrics unavailable\n');
    }
  }
}
