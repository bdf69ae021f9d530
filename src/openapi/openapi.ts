import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, type OpenAPIObject, SwaggerModule } from '@nestjs/swagger';
import { API_KEY_SCHEME } from './problems.js';
import { SCHEMAS } from './schemas.js';

/** Swagger UI; the JSON document is at `${DOCS_PATH}-json`. Public (ApiKeyGuard PUBLIC_PREFIXES). */
export const DOCS_PATH = '/docs';
export const DOCS_JSON_PATH = '/docs-json';

/**
 * Registered routes deliberately left out of the document:
 * - `/sandbox/...`: the provider emulators (SANDBOX=true only) speak each provider's own
 *   protocol; they are test and demo fixtures, not part of this service's API, and do not
 *   exist in production.
 */
export const UNDOCUMENTED_PREFIXES = ['/sandbox/'];

const DESCRIPTION = `
One refund API in front of Binance Pay, Cobo and Lean (the contract: refunds-api.md).

**Authentication.** Every \`/v1\` route and \`/mcp\` take \`Authorization: Bearer <api key>\`.
Roles: \`merchant\` (its own refunds, payments and webhook endpoints), \`ops\`, \`finance\`
(read only) and \`admin\` (everything, plus API keys and merchants). Missing or unknown key:
401; role not allowed: 403; another merchant's resource: 404 (never revealed).

**Rate limit.** Per API key; authenticated \`/v1\` responses carry \`RateLimit-Limit\`,
\`RateLimit-Remaining\`, \`RateLimit-Reset\` and \`RateLimit-Policy\`; over budget: 429
\`rate_limited\` with \`Retry-After\`.

**Errors** are \`application/problem+json\` (RFC 9457) with a stable \`code\` (schema \`Problem\`).
Bodies are JSON only (415 \`unsupported_media_type\`), at most 64 kB (413
\`payload_too_large\`); unknown fields are rejected (400 \`validation_failed\`).

**Amounts** are decimal strings, never JSON numbers.

**MCP.** \`POST /mcp\` is a Model Context Protocol server (streamable HTTP, stateless) with the
tools create-refund, get-refund, list-refunds, retry-refund and cancel-refund, under the same
keys and roles as the REST routes.
`.trim();

/**
 * The OpenAPI 3 document, scanned from the controllers' decorators. It holds no
 * configuration values: keys, secrets and URLs of this deployment never appear in it.
 */
export function buildOpenApiDocument(app: INestApplication): OpenAPIObject {
  const config = new DocumentBuilder()
    .setTitle('Refund orchestration API')
    .setDescription(DESCRIPTION)
    .setVersion('1.0.0')
    .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'An API key created with POST /v1/api-keys (shown once).' }, API_KEY_SCHEME)
    .addTag('Refunds', 'Create, read, change and follow refunds.')
    .addTag('Refund operations', 'Ops actions: retry, approve, reject, sync, review.')
    .addTag('Payments', 'Payments as seen by the refund guard.')
    .addTag('Webhook endpoints', 'Outbound merchant webhooks (refund.<status> events).')
    .addTag('Reports', 'Finance reports.')
    .addTag('Reconciliation', 'Compare our refunds with the providers’ records.')
    .addTag('API keys', 'Admin: API keys.')
    .addTag('Merchants', 'Admin: merchant settings.')
    .addTag('Provider webhooks', 'Inbound notifications from the providers, verified by their signatures.')
    .addTag('MCP', 'Model Context Protocol server for agents.')
    .addTag('Operations', 'Health probes, metrics and this documentation.')
    .build();
  config.components = { ...config.components, schemas: { ...SCHEMAS } };

  const document = SwaggerModule.createDocument(app, config, {
    operationIdFactory: (controller: string, method: string) => `${controller.replace(/Controller$/, '')}_${method}`,
  });
  // Request DTOs (the classes scanned for bodies) reject unknown members: StrictValidationPipe
  // answers 400 validation_failed ("x is not an allowed field").
  for (const [name, schema] of Object.entries(document.components?.schemas ?? {})) {
    if (!(name in SCHEMAS) && 'properties' in schema && !('additionalProperties' in schema)) schema.additionalProperties = false;
  }
  for (const path of Object.keys(document.paths)) {
    if (UNDOCUMENTED_PREFIXES.some((p) => `${path}/`.startsWith(p))) delete document.paths[path];
  }
  // Served by SwaggerModule itself (plain Fastify routes), so no controller describes them.
  document.paths[DOCS_PATH] = {
    get: {
      tags: ['Operations'],
      operationId: 'Docs_ui',
      summary: 'Swagger UI for this document',
      security: [],
      responses: { '200': { description: 'HTML page.', content: { 'text/html': { schema: { type: 'string' } } } } },
    },
  };
  document.paths[DOCS_JSON_PATH] = {
    get: {
      tags: ['Operations'],
      operationId: 'Docs_json',
      summary: 'This OpenAPI document',
      security: [],
      responses: {
        '200': { description: 'OpenAPI 3 document.', content: { 'application/json': { schema: { type: 'object', additionalProperties: true } } } },
      },
    },
  };
  return document;
}

/** Mounts GET /docs (Swagger UI) and GET /docs-json on an HTTP application. */
export function setupOpenApi(app: INestApplication): void {
  // Built on the first request, when every module is initialised; cached after that.
  SwaggerModule.setup(DOCS_PATH, app, () => buildOpenApiDocument(app), {
    jsonDocumentUrl: DOCS_JSON_PATH,
    raw: ['json'],
    customSiteTitle: 'Refund orchestration API',
    // Keys typed into "Authorize" stay in that browser tab only.
    swaggerOptions: { persistAuthorization: false },
  });
}
