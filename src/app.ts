import 'reflect-metadata';
import { INestApplication, INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import { isUtf8 } from 'node:buffer';
import { Logger } from 'nestjs-pino';
import { AppModule } from './app.module.js';
import { AppConfig } from './config/config.js';
import { Problem } from './common/problem.js';
import { ProblemFilter } from './common/problem.filter.js';
import { StrictValidationPipe } from './common/validation.js';
import { setupOpenApi } from './openapi/openapi.js';

/** Largest JSON body accepted; refunds are small, anything bigger is abuse or a bug. */
export const BODY_LIMIT = '64kb';

/** Rejects bodies that are not JSON on /v1 writes (415), before any parsing. */
function requireJson(req: Request, res: Response, next: NextFunction): void {
  const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  if (hasBody && ['POST', 'PUT', 'PATCH'].includes(req.method) && req.path.startsWith('/v1/') && !req.is('application/json')) {
    const problem = new Problem('unsupported_media_type', 'Send the body as application/json.');
    res.status(415).type('application/problem+json').send(JSON.stringify(problem.body(req.path)));
    return;
  }
  next();
}

/**
 * Rejects /v1 JSON bodies that are not valid UTF-8 (400): body-parser would otherwise turn
 * the bad bytes into U+FFFD and store text the client never sent.
 */
function requireUtf8(req: Request & { rawBody?: Buffer }, res: Response, next: NextFunction): void {
  if (req.rawBody && req.path.startsWith('/v1/') && !isUtf8(req.rawBody)) {
    const problem = Problem.validation([{ field: 'body', message: 'The body is not valid UTF-8.' }]);
    res.status(400).type('application/problem+json').send(JSON.stringify(problem.body(req.path)));
    return;
  }
  next();
}

/** Configures an HTTP application the same way for main.ts and the tests. */
export function configureHttp(app: NestExpressApplication): void {
  app.useLogger(app.get(Logger));
  app.disable('x-powered-by');
  app.use(requireJson);
  app.useBodyParser('json', { limit: BODY_LIMIT });
  app.useBodyParser('urlencoded', { limit: BODY_LIMIT, extended: false });
  app.use(requireUtf8);
  app.useGlobalFilters(new ProblemFilter());
  app.useGlobalPipes(new StrictValidationPipe());
  app.enableShutdownHooks();
  // GET /docs (Swagger UI) and /docs-json: HTTP roles only, public (ApiKeyGuard).
  setupOpenApi(app);
}

/** Builds the service for cfg.role: an HTTP app (api, all) or a bare context (worker). */
export async function createApp(cfg: AppConfig): Promise<INestApplication | INestApplicationContext> {
  const module = AppModule.forRole(cfg);
  if (cfg.role === 'worker') {
    const ctx = await NestFactory.createApplicationContext(module, { bufferLogs: true, abortOnError: false });
    ctx.useLogger(ctx.get(Logger));
    ctx.enableShutdownHooks();
    return ctx;
  }
  const app = await NestFactory.create<NestExpressApplication>(module, {
    rawBody: true,
    bufferLogs: true,
    bodyParser: false,
    // Throw start-up errors (bad config, unreachable database) instead of aborting the process.
    abortOnError: false,
  });
  configureHttp(app);
  return app;
}
