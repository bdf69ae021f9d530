import { DynamicModule, Module } from '@nestjs/common';
import { hostname } from 'node:os';
import type { Options as HttpLoggerOptions } from 'pino-http';
import { LoggerModule } from 'nestjs-pino';
import { MetricsModule } from './metrics/metrics.module.js';
import { MerchantsModule } from './merchants/merchants.module.js';
import { AuthModule } from './auth/auth.module.js';
import { AppConfig } from './config/config.js';
import { ConfigModule } from './config/config.module.js';
import { ConsoleModule } from './console/console.module.js';
import { requestIdFor } from './common/request-id.js';
import { DatabaseModule } from './database/database.module.js';
import { HealthModule } from './health/health.module.js';
import { McpModule } from './mcp/mcp.module.js';
import { OpsModule } from './ops/ops.module.js';
import { ProcessingModule } from './processing/processing.module.js';
import { ReconciliationModule } from './reconciliation/reconciliation.module.js';
import { RefundsModule } from './refunds/refunds.module.js';
import { ReportsModule } from './reports/reports.module.js';
import { SandboxModule } from './sandbox/sandbox.module.js';
import { WebhooksModule } from './webhooks/webhooks.module.js';

/** Headers and fields never written to logs. */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["binancepay-signature"]',
  'req.headers["biz-api-signature"]',
  'req.headers["lean-signature"]',
  'res.headers["set-cookie"]',
  '*.secretKey',
  '*.apiKey',
  '*.key',
  '*.password',
  '*.clientSecret',
];

/** Query parameters whose values are never logged: a client that puts a key in a URL must not leak it into our logs. */
const SECRET_QUERY_PARAM = /key|token|secret|passw|signature|auth|credential|session/i;

/** The request URL for logs, with the values of secret-looking query parameters redacted. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const query = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // a malformed name is logged as sent
      }
      return eq >= 0 && SECRET_QUERY_PARAM.test(decoded) ? `${name}=[redacted]` : pair;
    })
    .join('&');
  return `${url.slice(0, q)}?${query}`;
}

/**
 * pino-http's options: the access log and every other log line of the process. nestjs-pino
 * keeps one logger per process, built from the first app's options (one app per process, as
 * deployed; an app built later in the same process logs with the first one's role and level).
 */
export function httpLoggerOptions(cfg: Pick<AppConfig, 'logLevel' | 'role'>): HttpLoggerOptions {
  return {
    level: cfg.logLevel,
    // The role on every line of the process, as a base binding: pino-http's customProps would
    // build a second child logger per request (14–32 µs, docs/performance.md finding 34).
    base: { pid: process.pid, hostname: hostname(), role: cfg.role },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    // In the service, Fastify has already given the request this id (src/app.ts), and pino-http
    // takes it from there; this is for pino-http on its own (src/app.module.spec.ts).
    genReqId: (req, res) => {
      const id = requestIdFor(req.headers);
      res.setHeader('X-Request-Id', id);
      return id;
    },
    // Health probes and metrics scrapes every few seconds would drown the useful lines; the
    // sandbox emulators stand in for remote providers (2 calls per refund), whose requests
    // are not ours to log (each adapter call is a refund_attempts row already).
    autoLogging: { ignore: (req) => /^\/(health|metrics|sandbox)(\/|\?|$)/.test(req.url ?? '') },
    serializers: {
      req: (req: { id: string; method: string; url: string }) => ({ id: req.id, method: req.method, url: redactUrl(req.url) }),
    },
  };
}

/**
 * The whole service, composed for a role: `api` mounts HTTP only, `worker` runs queue
 * workers and the sweeper only, `all` both (refunds-api.md §1).
 */
@Module({})
export class AppModule {
  static forRole(cfg: AppConfig): DynamicModule {
    const http = cfg.role !== 'worker';
    const workers = cfg.role !== 'api';
    return {
      module: AppModule,
      imports: [
        ConfigModule.forRoot(cfg),
        LoggerModule.forRoot({ pinoHttp: httpLoggerOptions(cfg) }),
        DatabaseModule,
        MetricsModule.register({ http }),
        ...(cfg.sandbox ? [{ ...SandboxModule.register({ serveHttp: http && cfg.sandboxServe, webhookBaseUrl: cfg.publicUrl }), global: true }] : []),
        ProcessingModule.register({ workers }),
        AuthModule,
        MerchantsModule,
        RefundsModule,
        WebhooksModule.register({ workers }),
        ReconciliationModule.register({ workers }),
        ...(http ? [HealthModule, OpsModule] : []),
        ...(http ? [ReportsModule] : []),
        // POST /mcp: the MCP server for agents (HTTP roles only).
        ...(http ? [McpModule] : []),
        ...(http ? [ConsoleModule] : []),
      ],
    };
  }
}
