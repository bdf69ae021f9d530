import 'reflect-metadata';
import { INestApplication, INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isUtf8 } from 'node:buffer';
import type { IncomingMessage } from 'node:http';
import { parse as parseQueryString } from 'node:querystring';
import { Logger } from 'nestjs-pino';
import { AppModule } from './app.module.js';
import { AppConfig } from './config/config.js';
import { BodyError } from './common/body-errors.js';
import { replyProblem } from './common/http-reply.js';
import { Problem } from './common/problem.js';
import { ProblemFilter } from './common/problem.filter.js';
import { requestIdFor } from './common/request-id.js';
import { requestPath } from './common/request-path.js';
import { recordRoutes } from './common/served-routes.js';
import { StrictValidationPipe } from './common/validation.js';
import { setupOpenApi } from './openapi/openapi.js';

/** Largest body accepted, in bytes; refunds are small, anything bigger is abuse or a bug. */
export const BODY_LIMIT = 64 * 1024;

/**
 * The HTTP adapter: Fastify (docs/performance.md, finding 43: about a third less of the API's
 * CPU per request than Express). Its router options keep what clients of the Express version
 * relied on: a trailing slash and the letter case of a path do not matter, and route
 * parameters up to 1 kB reach the handlers (which answer a bad id themselves); a longer one
 * is 404 not_found. Requests still being answered when the app closes are served to the end
 * (no 503 of Fastify's own, which would not be problem+json).
 */
export function createHttpAdapter(): FastifyAdapter {
  const adapter = new FastifyAdapter({
    bodyLimit: BODY_LIMIT,
    // The caller's X-Request-Id or a UUID (echoed by the hook below); @fastify/middie hands it
    // to the access log (pino-http), which would otherwise never call its own genReqId.
    genReqId: (req: IncomingMessage) => requestIdFor(req.headers),
    // Node's default, which the service had with Express; Fastify's own is 72 s. An idle
    // connection a client keeps (a provider's webhook sender, a proxy) would otherwise hold
    // a shutdown up to that long (seen in test/create-guard.e2e.spec.ts). Behind a load
    // balancer, set the balancer's idle timeout below this.
    keepAliveTimeout: 5_000,
    return503OnClosing: false,
    routerOptions: { ignoreTrailingSlash: true, caseSensitive: false, maxParamLength: 1024 },
    // The router's own refusals (a path that is not valid percent-encoding) happen before
    // Nest sees the request: answered as problem+json here, like everything else.
    frameworkErrors: (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      let problem: Problem;
      if (err.code === 'FST_ERR_BAD_URL') {
        problem = Problem.validation([{ field: 'path', message: 'is not valid percent-encoding' }], 'The request URL is not valid.');
      } else if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
        // A path segment over maxParamLength: no route takes it, as no id is that long.
        problem = new Problem('not_found', `No route ${req.method} ${requestPath(req.url).slice(0, 200)}`);
      } else {
        req.log.error({ err }, 'router error');
        problem = new Problem('internal_error', 'An unexpected error occurred.');
      }
      void replyProblem(reply, problem, requestPath(req.url));
    },
  });
  recordRoutes(adapter.getInstance());
  adapter.getInstance().addHook('onRequest', (req, reply, done) => {
    void reply.header('X-Request-Id', req.id);
    done();
  });
  return adapter;
}

type ParserDone = (err: Error | null, body?: unknown) => void;

/**
 * JSON bodies, as body-parser read them for the Express version: an empty body is `{}`, the
 * top level must be an object or an array. /v1 bodies must also be valid UTF-8 (400):
 * decoding would otherwise turn the bad bytes into U+FFFD and store text the client never
 * sent. The raw bytes stay on `req.rawBody` for the webhooks' signature checks.
 */
function parseJsonBody(req: FastifyRequest, body: Buffer, done: ParserDone): void {
  if (body.length === 0) return done(null, {});
  if (!isUtf8(body) && isV1(req)) {
    return done(Problem.validation([{ field: 'body', message: 'The body is not valid UTF-8.' }]));
  }
  const text = body.toString('utf8');
  const first = /\S/.exec(text)?.[0];
  if (first !== '{' && first !== '[') return done(new BodyError('unreadable', 'The body is not a JSON object or array.'));
  try {
    done(null, JSON.parse(text));
  } catch {
    done(new BodyError('unreadable', 'The request body is not valid JSON.'));
  }
}

/**
 * Whether the request is for a /v1 route, decided by the route that matched (its declared
 * path), so no spelling of the URL (letter case, %-escapes, an absolute-form target) gets a
 * /v1 body past the checks below; the URL as sent where no route matched (nothing runs then).
 */
function isV1(req: FastifyRequest): boolean {
  return (req.routeOptions?.url ?? requestPath(req.url)).toLowerCase().startsWith('/v1/');
}

const NOT_JSON = () => new Problem('unsupported_media_type', 'Send the body as application/json.');

/**
 * Form bodies: 415 on /v1 (refunds-api.md §8: JSON only); elsewhere (the Lean emulator's
 * OAuth2 token endpoint) parsed as the Express version did (`querystring`, repeated keys as
 * arrays), onto a plain object where `__proto__` is an ordinary key.
 */
function parseFormBody(req: FastifyRequest, body: Buffer, done: ParserDone): void {
  if (isV1(req)) return done(NOT_JSON());
  done(null, { ...parseQueryString(body.toString('utf8')) });
}

/**
 * Any other content type: /v1 writes answer 415 before anything is read into a handler
 * (refunds-api.md §8); elsewhere (provider webhooks, the emulators) the bytes are kept on
 * `req.rawBody` for the handler to judge, as the Express version left them unparsed.
 */
function otherBody(req: FastifyRequest, _body: Buffer, done: ParserDone): void {
  if (isV1(req)) return done(NOT_JSON());
  done(null, undefined);
}

/**
 * What every HTTP application here needs, the emulators' own test apps included: the body
 * parsers, and the filter that answers errors (problem+json, or an emulator's own format
 * through its responder). The app must be created with `rawBody: true, bodyParser: false`.
 */
export function configureBodiesAndErrors(app: NestFastifyApplication): void {
  app.useBodyParser('application/json', { bodyLimit: BODY_LIMIT }, parseJsonBody);
  app.useBodyParser('application/x-www-form-urlencoded', { bodyLimit: BODY_LIMIT }, parseFormBody);
  // Fastify's own text/plain parser would hand the text to the handlers: replaced too.
  app.useBodyParser(['text/plain', '*'], { bodyLimit: BODY_LIMIT }, otherBody);
  app.useGlobalFilters(new ProblemFilter());
}

/** Configures an HTTP application the same way for main.ts and the tests. */
export function configureHttp(app: NestFastifyApplication): void {
  app.useLogger(app.get(Logger));
  configureBodiesAndErrors(app);
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
  const app = await NestFactory.create<NestFastifyApplication>(module, createHttpAdapter(), {
    rawBody: true,
    bufferLogs: true,
    bodyParser: false,
    // Throw start-up errors (bad config, unreachable database) instead of aborting the process.
    abortOnError: false,
  });
  configureHttp(app);
  return app;
}
