import { Logger, MiddlewareConsumer, Module, NestModule, RequestMethod } from '@nestjs/common';
import { consoleBuilt, consoleDir } from './console-assets.js';
import { consoleStaticMiddleware } from './console-static.middleware.js';
import { MeController } from './me.controller.js';
import { QueuesController } from './queues.controller.js';

/**
 * The ops console (HTTP roles only): the static single-page app built from console/ into
 * dist/console, served at /console by a small middleware (so the ApiKeyGuard, which guards
 * route handlers, never sees it: the page is public, the /v1 calls it makes are not), and
 * the two read routes it needs that the API lacked: GET /v1/me and GET /v1/queues.
 *
 * Why a static SPA and not server-rendered pages: the console is a client of the same /v1
 * API as any merchant or script, with the same key in the Authorization header, so the API
 * stays the one place that authorises and audits. Server-rendered pages would need a
 * session (a cookie holding or standing for the key: CSRF protection, server-side session
 * state, a second authorisation path) to render anything. The SPA is static files behind
 * a strict CSP, with no runtime dependency in the service.
 */
@Module({ controllers: [MeController, QueuesController] })
export class ConsoleModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    const dir = consoleDir();
    if (!consoleBuilt(dir)) new Logger('Console').warn(`console not built (${dir}): /console answers 503 until \`npm run build\``);
    consumer
      .apply(consoleStaticMiddleware(dir))
      .forRoutes({ path: 'console', method: RequestMethod.GET }, { path: 'console/*path', method: RequestMethod.GET });
  }
}
