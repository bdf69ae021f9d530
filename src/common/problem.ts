import { HttpException } from '@nestjs/common';

/**
 * Stable error codes of the public API (refunds-api.md §8). Clients branch on these,
 * so a code, once published, keeps its meaning and HTTP status.
 */
export const ERROR_CODES = {
  validation_failed: { status: 400, title: 'Validation failed' },
  idempotency_key_required: { status: 400, title: 'Idempotency-Key header required' },
  idempotency_key_reused: { status: 409, title: 'Idempotency key reused with a different request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  not_found: { status: 404, title: 'Not found' },
  payment_not_found: { status: 404, title: 'Payment not found' },
  payment_not_refundable: { status: 422, title: 'Payment not refundable' },
  currency_mismatch: { status: 422, title: 'Currency mismatch' },
  amount_exceeds_refundable: { status: 422, title: 'Amount exceeds refundable' },
  provider_not_configured: { status: 422, title: 'Provider not configured' },
  invalid_state: { status: 409, title: 'Invalid state' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  rate_limited: { status: 429, title: 'Too many requests' },
  service_unavailable: { status: 503, title: 'Service unavailable' },
  provider_unavailable: { status: 503, title: 'Provider unavailable' },
  internal_error: { status: 500, title: 'Internal error' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface FieldError {
  field: string;
  message: string;
}

/** An RFC 9457 problem: thrown anywhere, rendered by ProblemFilter. */
export class Problem extends HttpException {
  constructor(
    readonly code: ErrorCode,
    readonly detail?: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(detail ?? ERROR_CODES[code].title, ERROR_CODES[code].status);
  }

  body(instance?: string): Record<string, unknown> {
    const def = ERROR_CODES[this.code];
    return {
      ...this.extra,
      // The RFC 9457 members always win: an extra named `status` (a refund's status, say)
      // must not replace the HTTP status clients read from the body.
      type: 'about:blank',
      title: def.title,
      status: def.status,
      code: this.code,
      ...(this.detail ? { detail: this.detail } : {}),
      ...(instance ? { instance } : {}),
    };
  }

  static validation(errors: FieldError[], detail = 'The request is not valid.'): Problem {
    return new Problem('validation_failed', detail, { errors });
  }
}
