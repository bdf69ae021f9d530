import { applyDecorators } from '@nestjs/common';
import { ApiBearerAuth, ApiResponse } from '@nestjs/swagger';
import { ERROR_CODES, type ErrorCode } from '../common/problem.js';

/** Name of the bearer security scheme in the OpenAPI document. */
export const API_KEY_SCHEME = 'apiKey';

export const PROBLEM_MEDIA_TYPE = 'application/problem+json';

/** `$ref` of the RFC 9457 problem schema (src/openapi/schemas.ts). */
export const PROBLEM_REF = '#/components/schemas/Problem';

/**
 * One example body per stable error code (refunds-api.md §8), with the extra members the
 * service adds for that code. Details are illustrative; clients branch on `code` only.
 */
const EXAMPLE_DETAILS: Record<ErrorCode, { detail: string; extra?: Record<string, unknown> }> = {
  validation_failed: {
    detail: 'The request is not valid.',
    extra: { errors: [{ field: 'amount', message: 'amount must be a decimal string such as "12.50" (no sign, exponent or spaces)' }] },
  },
  idempotency_key_required: { detail: 'Send an Idempotency-Key header (1-255 printable characters).' },
  idempotency_key_reused: { detail: 'This Idempotency-Key was used with a different request body.' },
  unauthorized: { detail: 'Send an API key as "Authorization: Bearer <key>".' },
  forbidden: { detail: 'Role finance may not call this route.' },
  not_found: { detail: 'No such refund.' },
  payment_not_found: { detail: 'No payment 383729303729303 at binance_pay.' },
  payment_not_refundable: { detail: 'The payment is EXPIRED at binance_pay.' },
  currency_mismatch: { detail: 'The payment is in USDT, not USDC.', extra: { paymentCurrency: 'USDT' } },
  amount_exceeds_refundable: { detail: 'At most 10 USDT can be refunded.', extra: { refundableAmount: '10' } },
  provider_not_configured: { detail: 'Provider lean is not configured on this service.' },
  invalid_state: { detail: 'A succeeded refund cannot be canceled.', extra: { refundStatus: 'succeeded' } },
  payload_too_large: { detail: 'The request body is too large.' },
  method_not_allowed: { detail: 'This endpoint answers POST only (stateless MCP: no server stream, no session to end).' },
  unsupported_media_type: { detail: 'Send the body as application/json.' },
  rate_limited: {
    detail: 'Rate limit of 600 requests per minute for this API key exceeded; retry in 2 s.',
    extra: { retryAfterSeconds: 2 },
  },
  service_unavailable: { detail: 'A backing service is unavailable; try again shortly.', extra: { retryAfterSeconds: 5 } },
  provider_unavailable: { detail: 'The provider could not be reached; try again shortly.', extra: { retryAfterSeconds: 5 } },
  internal_error: { detail: 'An unexpected error occurred.' },
};

/** The body the service sends for `code` (same member order as Problem.body). */
export function problemExample(code: ErrorCode, instance = '/v1/refunds'): Record<string, unknown> {
  const def = ERROR_CODES[code];
  const ex = EXAMPLE_DETAILS[code];
  return { ...ex.extra, type: 'about:blank', title: def.title, status: def.status, code, detail: ex.detail, instance };
}

/** Response description listing the codes, e.g. "`not_found`: Not found". */
function describe(codes: ErrorCode[]): string {
  return codes.map((c) => `\`${c}\`: ${ERROR_CODES[c].title}`).join('; ');
}

/**
 * Documents problem+json error responses, one response per HTTP status with one named
 * example per code (so 422 lists every business-rule code of the route). Usable on a
 * controller class (applies to every route) or a route; a route's own entry for a status
 * replaces the class's, so a route that adds a code to a class-level status lists both.
 */
export function ApiProblems(...codes: ErrorCode[]): MethodDecorator & ClassDecorator {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = ERROR_CODES[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return applyDecorators(
    ...[...byStatus].map(([status, group]) =>
      ApiResponse({
        status,
        description: describe(group),
        ...(status === 429 || status === 503
          ? { headers: { 'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer' } } } }
          : {}),
        content: {
          [PROBLEM_MEDIA_TYPE]: {
            schema: { $ref: PROBLEM_REF },
            examples: Object.fromEntries(group.map((c) => [c, { summary: ERROR_CODES[c].title, value: problemExample(c) }])),
          },
        },
      }),
    ),
  ) as MethodDecorator & ClassDecorator;
}

/** Codes every authenticated route can answer, whatever it does. */
export const AUTH_PROBLEMS: ErrorCode[] = ['unauthorized', 'forbidden', 'rate_limited', 'service_unavailable'];

/**
 * A controller (or route) behind ApiKeyGuard: `Authorization: Bearer <api key>`, with the
 * guard's answers (401 unauthorized, 403 forbidden, 429 rate_limited) and 503 when
 * Postgres or Redis cannot be reached.
 */
export function ApiKeyAuth(): MethodDecorator & ClassDecorator {
  return applyDecorators(ApiBearerAuth(API_KEY_SCHEME), ApiProblems(...AUTH_PROBLEMS)) as MethodDecorator & ClassDecorator;
}

/** Problems of a route that takes a JSON body (src/app.ts: 64 kB limit, JSON only, UTF-8). */
export const BODY_PROBLEMS: ErrorCode[] = ['validation_failed', 'payload_too_large', 'unsupported_media_type'];
