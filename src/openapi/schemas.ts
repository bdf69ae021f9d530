import type { SchemaObject } from '@nestjs/swagger';
import { ERROR_CODES } from '../common/problem.js';
import { PROVIDERS } from '../providers/provider.js';
import { REFUND_REASONS, REFUND_STATUSES } from '../refunds/refund-status.js';

/**
 * Response schemas of the public API (refunds-api.md §3, §4, §7, §10), registered as
 * `components.schemas` and referenced with `ref('Refund')`. They describe what the
 * services return (toRefundJson, runSummary, endpointJson, ...); request bodies and query
 * strings are described on the DTO classes themselves (@ApiProperty).
 */
/** A `$ref` to one of SCHEMAS (an unknown name fails the OpenAPI validation in test/openapi.e2e.spec.ts). */
export const ref = (name: string): { $ref: string } => ({ $ref: `#/components/schemas/${name}` });

const dateTime = (description?: string, nullable = false): SchemaObject => ({
  type: 'string',
  format: 'date-time',
  ...(nullable ? { nullable: true } : {}),
  ...(description ? { description } : {}),
  example: '2026-11-22T10:00:00.000Z',
});
const decimal = (description: string, example = '25.17'): SchemaObject => ({
  type: 'string',
  pattern: '^\\d+(\\.\\d+)?$',
  description: `${description} Decimal string, never a JSON number.`,
  example,
});
const nullableString = (description: string, example?: string): SchemaObject => ({
  type: 'string',
  nullable: true,
  description,
  ...(example !== undefined ? { example } : {}),
});
const uuid = (description: string): SchemaObject => ({
  type: 'string',
  format: 'uuid',
  description,
  example: '0b6c4a0e-6f0a-4d55-9d1c-2a8e51f1d7aa',
});
const list = (item: string, extra: Record<string, SchemaObject> = {}, required: string[] = []): SchemaObject => ({
  type: 'object',
  required: ['data', ...required],
  properties: { data: { type: 'array', items: ref(item) }, ...extra },
});

const REFUND_EXAMPLE = {
  id: '0b6c4a0e-6f0a-4d55-9d1c-2a8e51f1d7aa',
  merchantId: 'M1001',
  provider: 'binance_pay',
  paymentId: '383729303729303',
  amount: '25.17',
  currency: 'USDT',
  status: 'processing',
  reason: 'requested_by_customer',
  description: null,
  metadata: {},
  refundedAmount: '0',
  providerRefundId: '281190290829148160',
  providerStatus: 'REFUND_PENDING',
  failureCode: null,
  failureMessage: null,
  failureCategory: null,
  attemptCount: 1,
  providerDetails: { remainingAttempts: 9, payerOpenId: null },
  review: null,
  createdAt: '2026-11-22T10:00:00.000Z',
  updatedAt: '2026-11-22T10:00:01.000Z',
  completedAt: null,
};

export const SCHEMAS: Record<string, SchemaObject> = {
  Problem: {
    type: 'object',
    description:
      'RFC 9457 problem details, sent as `application/problem+json`. `code` is stable: clients branch on it. ' +
      'Some codes carry extra members (`errors`, `refundableAmount`, `paymentCurrency`, `refundStatus`, `retryAfterSeconds`).',
    required: ['type', 'title', 'status', 'code'],
    properties: {
      type: { type: 'string', example: 'about:blank' },
      title: { type: 'string', example: 'Amount exceeds refundable' },
      status: { type: 'integer', example: 422 },
      code: { type: 'string', enum: Object.keys(ERROR_CODES), example: 'amount_exceeds_refundable' },
      detail: { type: 'string', example: 'At most 10 USDT can be refunded.' },
      instance: { type: 'string', description: 'The request path.', example: '/v1/refunds' },
      errors: {
        type: 'array',
        description: '`validation_failed` only: every field that is wrong.',
        items: {
          type: 'object',
          required: ['field', 'message'],
          properties: { field: { type: 'string', example: 'amount' }, message: { type: 'string' } },
        },
      },
      refundableAmount: decimal('`amount_exceeds_refundable` only: what can still be refunded.', '10'),
      paymentCurrency: { type: 'string', description: '`currency_mismatch` only.', example: 'USDT' },
      refundStatus: { type: 'string', enum: [...REFUND_STATUSES], description: '`invalid_state` only: the refund’s status.' },
      retryAfterSeconds: { type: 'integer', description: '`rate_limited`, `service_unavailable`: also sent as Retry-After.' },
    },
    additionalProperties: true,
  },
  Refund: {
    type: 'object',
    description: 'A refund (refunds-api.md §3).',
    required: [
      'id', 'merchantId', 'provider', 'paymentId', 'amount', 'currency', 'status', 'reason', 'description', 'metadata',
      'refundedAmount', 'providerRefundId', 'providerStatus', 'failureCode', 'failureMessage', 'failureCategory',
      'attemptCount', 'providerDetails', 'review', 'createdAt', 'updatedAt', 'completedAt',
    ],
    properties: {
      id: uuid('Refund id.'),
      merchantId: { type: 'string', example: 'M1001' },
      provider: { type: 'string', enum: [...PROVIDERS] },
      paymentId: { type: 'string', example: '383729303729303' },
      amount: decimal('Requested amount.'),
      currency: { type: 'string', example: 'USDT' },
      status: {
        type: 'string',
        enum: [...REFUND_STATUSES],
        description: 'Final: succeeded, partially_succeeded, failed (unless ops retries it), canceled.',
      },
      reason: { type: 'string', enum: [...REFUND_REASONS] },
      description: nullableString('Free text given at creation.'),
      metadata: { type: 'object', additionalProperties: { type: 'string' } },
      refundedAmount: decimal('What actually went back to the payer: `amount` when succeeded, less when partially_succeeded, "0" otherwise.', '0'),
      providerRefundId: nullableString('The provider’s refund id.', '281190290829148160'),
      providerStatus: nullableString('The provider’s own status.', 'REFUND_PENDING'),
      failureCode: nullableString('The provider’s code when failed.'),
      failureMessage: nullableString('The provider’s message when failed.'),
      failureCategory: {
        type: 'string',
        enum: ['retryable', 'final'],
        nullable: true,
        description: 'Failed refunds: whether an ops retry can help.',
      },
      attemptCount: { type: 'integer', example: 1 },
      providerDetails: {
        type: 'object',
        additionalProperties: true,
        description:
          'cobo: { tokenId, chainId, toAddress, refundType, merchantFee, transactions }; lean: { reasonCode, externalReference }; binance_pay: { remainingAttempts, payerOpenId }.',
      },
      review: {
        type: 'object',
        nullable: true,
        description: 'Set when a provider reported a final outcome contradicting ours.',
        required: ['reason', 'flaggedAt'],
        properties: { reason: { type: 'string' }, flaggedAt: dateTime() },
      },
      createdAt: dateTime(),
      updatedAt: dateTime(),
      completedAt: dateTime('When the refund reached a final status.', true),
    },
    example: REFUND_EXAMPLE,
  },
  RefundList: list('Refund', { nextCursor: nullableString('Pass as `cursor` for the next page; null on the last page.') }, ['nextCursor']),
  RefundAttempt: {
    type: 'object',
    required: ['number', 'providerRequestId', 'operation', 'outcome', 'createdAt'],
    properties: {
      number: { type: 'integer', example: 1 },
      providerRequestId: { type: 'string', example: 'r0b6c4a0e6f0a4d559d1c2a8e51f1d7aa1' },
      operation: { type: 'string', example: 'create', description: 'create, query, approve, cancel, update, ...' },
      outcome: {
        type: 'string',
        example: 'pending',
        description:
          'How the call ended: the final status it reported (succeeded, failed, ...), pending, requires_action, not_found, retry or unknown; done, refused or unknown for update and cancel calls, approved or unknown for approve calls; in_flight while it is under way (or if the process stopped during it); not_sent for a create or query prepared and then not sent (a safeguard: its row was written with the step\'s claim, and the step found it should not be sent).',
      },
      httpStatus: { type: 'integer', nullable: true, example: 200 },
      providerCode: nullableString('The provider’s code.', '000000'),
      errorMessage: nullableString('Transport or provider error, if any.'),
      latencyMs: { type: 'integer', nullable: true, example: 84 },
      createdAt: dateTime(),
    },
  },
  RefundAttemptList: list('RefundAttempt'),
  RefundEvent: {
    type: 'object',
    required: ['from', 'to', 'actor', 'detail', 'createdAt'],
    properties: {
      from: { type: 'string', nullable: true, enum: [...REFUND_STATUSES], description: 'null for the creation event.' },
      to: { type: 'string', enum: [...REFUND_STATUSES] },
      actor: { type: 'string', example: 'worker', description: 'api_key:<id>, worker, webhook:<provider>, ... (merchants see "ops" for other keys).' },
      detail: { type: 'object', additionalProperties: true },
      createdAt: dateTime(),
    },
  },
  RefundEventList: list('RefundEvent'),
  BulkRetryResult: {
    type: 'object',
    required: ['retried', 'ids', 'skipped'],
    properties: {
      retried: { type: 'integer', example: 1 },
      ids: { type: 'array', items: { type: 'string', format: 'uuid' } },
      skipped: {
        type: 'array',
        items: {
          type: 'object',
          required: ['id', 'code'],
          properties: { id: { type: 'string', format: 'uuid' }, code: { type: 'string' }, detail: { type: 'string' } },
        },
      },
    },
  },
  Payment: {
    type: 'object',
    required: ['provider', 'paymentId', 'merchantId', 'amount', 'currency', 'status', 'refundedAmount', 'reservedAmount', 'refundableAmount'],
    properties: {
      provider: { type: 'string', enum: [...PROVIDERS] },
      paymentId: { type: 'string', example: '383729303729303' },
      merchantId: { type: 'string', example: 'M1001' },
      amount: decimal('Paid amount.', '100'),
      currency: { type: 'string', example: 'USDT' },
      status: { type: 'string', example: 'PAID', description: 'The provider’s payment status.' },
      refundedAmount: decimal('Refunded so far.', '25.17'),
      reservedAmount: decimal('Held by refunds in flight.', '0'),
      refundableAmount: decimal('What can still be refunded.', '74.83'),
    },
  },
  RefundReasons: {
    type: 'object',
    required: ['data', 'providerReasons'],
    properties: {
      data: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            reason: { type: 'string', enum: [...REFUND_REASONS] },
            binance_pay: { type: 'string', nullable: true },
            lean: { type: 'string', example: 'CUSTOMER_REQUEST' },
          },
        },
      },
      providerReasons: { type: 'array', items: { type: 'object', additionalProperties: true }, description: 'Lean’s own reasons with ?provider=lean, else empty.' },
    },
  },
  ApiKey: {
    type: 'object',
    required: ['id', 'role', 'merchantId', 'name', 'createdAt', 'revokedAt'],
    properties: {
      id: uuid('API key id.'),
      role: { type: 'string', enum: ['merchant', 'ops', 'finance', 'admin'] },
      merchantId: { type: 'string', nullable: true, example: 'M1001' },
      name: { type: 'string', example: 'shop' },
      createdAt: dateTime(),
      revokedAt: dateTime(undefined, true),
    },
  },
  ApiKeyCreated: {
    allOf: [
      ref('ApiKey'),
      {
        type: 'object',
        required: ['key'],
        properties: { key: { type: 'string', description: 'The key itself, shown only in this response (only its SHA-256 is stored).', example: 'rk_merchant_<43 random characters>' } },
      },
    ],
  },
  Merchant: {
    type: 'object',
    required: ['id', 'name', 'approvalThresholds', 'createdAt', 'updatedAt'],
    properties: {
      id: { type: 'string', example: 'M1001' },
      name: { type: 'string', nullable: true, example: 'Shop' },
      approvalThresholds: { type: 'object', additionalProperties: { type: 'string' }, example: { USDT: '1000' } },
      cobo: { type: 'object', nullable: true, properties: { merchantId: { type: 'string' } } },
      lean: { type: 'object', nullable: true, properties: { merchantId: { type: 'string' } } },
      binancePay: { type: 'object', nullable: true, properties: { merchantId: { type: 'string' } } },
      createdAt: dateTime(),
      updatedAt: dateTime(),
    },
  },
  WebhookEndpoint: {
    type: 'object',
    required: ['id', 'merchantId', 'url', 'createdAt', 'disabledAt'],
    properties: {
      id: uuid('Endpoint id.'),
      merchantId: { type: 'string', example: 'M1001' },
      url: { type: 'string', format: 'uri', example: 'https://shop.example/hooks/refunds' },
      createdAt: dateTime(),
      disabledAt: dateTime(undefined, true),
    },
  },
  WebhookEndpointCreated: {
    type: 'object',
    required: ['id', 'url', 'secret', 'createdAt'],
    properties: {
      id: uuid('Endpoint id.'),
      url: { type: 'string', format: 'uri', example: 'https://shop.example/hooks/refunds' },
      secret: { type: 'string', description: 'Signing secret (`whsec_` + 32 random bytes, base64url), shown only here.', example: 'whsec_<43 random characters>' },
      createdAt: dateTime(),
    },
  },
  WebhookEndpointList: list('WebhookEndpoint'),
  WebhookDelivery: {
    type: 'object',
    required: ['id', 'eventId', 'type', 'status', 'attempts'],
    properties: {
      id: uuid('Delivery id.'),
      eventId: { type: 'string', example: 'evt_42' },
      type: { type: 'string', example: 'refund.succeeded' },
      status: { type: 'string', enum: ['pending', 'delivered', 'failed'] },
      attempts: { type: 'integer' },
      lastHttpStatus: { type: 'integer', nullable: true },
      lastError: { type: 'string', nullable: true },
      createdAt: dateTime(),
      deliveredAt: dateTime(undefined, true),
      nextAttemptAt: dateTime(undefined, true),
    },
  },
  WebhookDeliveryList: list('WebhookDelivery'),
  ReportSummary: {
    type: 'object',
    required: ['data'],
    properties: {
      data: {
        type: 'array',
        items: {
          type: 'object',
          required: ['count', 'amount', 'refundedAmount'],
          properties: {
            provider: { type: 'string', enum: [...PROVIDERS] },
            currency: { type: 'string' },
            status: { type: 'string', enum: [...REFUND_STATUSES] },
            merchantId: { type: 'string' },
            day: { type: 'string', format: 'date' },
            count: { type: 'integer' },
            amount: decimal('Sum of amounts.', '1234.50'),
            refundedAmount: decimal('Sum of refunded amounts.', '1200.00'),
          },
        },
      },
    },
  },
  ReconciliationAccepted: {
    type: 'object',
    required: ['id', 'status'],
    properties: { id: uuid('Run id.'), status: { type: 'string', enum: ['queued'] } },
  },
  ReconciliationRun: {
    type: 'object',
    required: ['id', 'provider', 'from', 'to', 'status', 'checked', 'matched', 'mismatchCount'],
    properties: {
      id: uuid('Run id.'),
      provider: { type: 'string', enum: [...PROVIDERS] },
      from: dateTime('Window start (inclusive).'),
      to: dateTime('Window end (exclusive).'),
      status: { type: 'string', enum: ['queued', 'running', 'completed', 'failed'] },
      scheduled: { type: 'boolean' },
      checked: { type: 'integer' },
      matched: { type: 'integer' },
      mismatchCount: { type: 'integer' },
      providerRecords: { type: 'integer', nullable: true },
      attempts: { type: 'integer' },
      requestedBy: { type: 'string', nullable: true },
      createdAt: dateTime(),
      startedAt: dateTime(undefined, true),
      completedAt: dateTime(undefined, true),
      error: { type: 'string', nullable: true },
    },
  },
  ReconciliationRunList: list('ReconciliationRun'),
  ReconciliationRunDetail: {
    allOf: [
      ref('ReconciliationRun'),
      {
        type: 'object',
        required: ['mismatches', 'mismatchesTruncated'],
        properties: {
          mismatches: {
            type: 'array',
            items: {
              type: 'object',
              required: ['kind'],
              properties: {
                refundId: { type: 'string', format: 'uuid', nullable: true },
                providerRefundId: { type: 'string', nullable: true },
                providerRequestId: { type: 'string', nullable: true },
                kind: { type: 'string', enum: ['missing_at_provider', 'missing_locally', 'status_mismatch', 'amount_mismatch'] },
                ours: { type: 'object', nullable: true, additionalProperties: true },
                theirs: { type: 'object', nullable: true, additionalProperties: true },
                detail: { type: 'string', nullable: true },
              },
            },
          },
          mismatchesTruncated: { type: 'boolean' },
        },
      },
    ],
  },
  WebhookAck: {
    type: 'object',
    description: 'Acknowledgement in the provider’s expected shape.',
    additionalProperties: true,
    example: { received: true },
  },
  JsonRpcMessage: {
    type: 'object',
    description: 'A JSON-RPC 2.0 message of the Model Context Protocol (or a batch of them).',
    required: ['jsonrpc'],
    properties: {
      jsonrpc: { type: 'string', enum: ['2.0'] },
      id: { oneOf: [{ type: 'string' }, { type: 'integer' }] },
      method: { type: 'string', example: 'tools/call' },
      params: { type: 'object', additionalProperties: true },
      result: { type: 'object', additionalProperties: true },
      error: { type: 'object', additionalProperties: true },
    },
  },
};
