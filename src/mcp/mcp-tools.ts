import type { ToolAnnotations } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { PROVIDERS } from '../providers/provider.js';
import { REFUND_REASONS, REFUND_STATUSES } from '../refunds/refund-status.js';

/**
 * The MCP tools (refunds-api.md §10): their names, input schemas and annotations. The zod
 * schemas check JSON types, required members, enums and unknown members (rejected, as on
 * REST); every finer rule (amount format and precision, lengths, the provider blocks) is
 * the REST DTO's, applied by McpService with the same validation pipe, so MCP and REST
 * accept exactly the same requests. The same schema is published in tools/list.
 */

const refundId = z.string().min(1).describe('The refund id (a UUID).');

export const CREATE_REFUND_INPUT = z
  .object({
    idempotency_key: z
      .string()
      .min(1)
      .max(255)
      .describe(
        'Required. 1-255 printable ASCII characters, one per refund you mean to make (the REST Idempotency-Key). ' +
          'The same key with the same arguments returns the same refund; with other arguments it is an idempotency_key_reused error.',
      ),
    provider: z.enum(PROVIDERS).describe('The payment provider.'),
    paymentId: z.string().describe('The provider’s payment id (Binance prepayId, Cobo order id, Lean payment id); 1-128 printable characters.'),
    amount: z
      .string()
      .describe('Decimal string > 0 such as "12.50" (never a number), at most the provider’s precision (Binance 8, Cobo 2, Lean 2 decimals).'),
    currency: z.string().describe('The payment’s currency, 2-12 upper-case letters or digits, e.g. USDT.'),
    reason: z.enum(REFUND_REASONS).optional().describe('Default requested_by_customer.'),
    description: z.string().optional().describe('Free text, up to 500 characters.'),
    metadata: z
      .record(z.string(), z.string())
      .optional()
      .describe('Up to 50 string values; keys up to 40, values up to 500 characters.'),
    cobo: z
      .object({
        tokenId: z.string().describe('Cobo token id, e.g. TRON_USDT.'),
        toAddress: z.string().optional().describe('Destination; without it the refund waits in requires_action.'),
        refundType: z.enum(['merchant', 'psp']).optional(),
        merchantFee: z.object({ amount: z.string(), tokenId: z.string() }).strict().optional(),
      })
      .strict()
      .optional()
      .describe('Cobo refunds only.'),
    lean: z
      .object({ reasonCode: z.enum(['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED']).optional() })
      .strict()
      .optional()
      .describe('Lean refunds only; reasonCode defaults from reason.'),
  })
  .strict();

export const GET_REFUND_INPUT = z.object({ id: refundId }).strict();

export const LIST_REFUNDS_INPUT = z
  .object({
    provider: z.enum(PROVIDERS).optional(),
    status: z.string().optional().describe(`One status or a comma-separated list of: ${REFUND_STATUSES.join(', ')}.`),
    paymentId: z.string().optional(),
    merchantId: z.string().optional().describe('ops, finance, admin only: one merchant’s refunds (a merchant key always sees only its own).'),
    createdFrom: z.string().optional().describe('ISO 8601; created at or after.'),
    createdTo: z.string().optional().describe('ISO 8601; created before.'),
    limit: z.number().int().min(1).max(100).optional().describe('Page size, default 20.'),
    cursor: z.string().optional().describe('The nextCursor of the previous page.'),
    stuck: z.boolean().optional().describe('true: queued or processing and unchanged for longer than the stuck horizon.'),
    failureCode: z.string().optional(),
    failureCategory: z.enum(['retryable', 'final']).optional(),
    review: z.boolean().optional().describe('true: only refunds flagged for review.'),
  })
  .strict();

export const RETRY_REFUND_INPUT = z
  .object({ id: refundId, comment: z.string().optional().describe('Recorded with the event, up to 500 characters.') })
  .strict();

export const CANCEL_REFUND_INPUT = z.object({ id: refundId }).strict();

export type ToolName = 'create-refund' | 'get-refund' | 'list-refunds' | 'retry-refund' | 'cancel-refund';

export interface ToolSpec {
  name: ToolName;
  title: string;
  description: string;
  input: z.ZodObject;
  annotations: ToolAnnotations;
}

/**
 * Annotations are hints for clients (MCP 2025-06-18 ToolAnnotations):
 * - create-refund: not read-only; not destructive in the spec's sense (it only adds a
 *   refund, nothing existing is changed or removed), but it moves money at the provider,
 *   which the description says plainly; idempotent through idempotency_key; open world.
 * - get/list: read-only, closed world (our database only, no provider call).
 * - retry-refund: changes an existing refund (failed → queued) and sends it to the provider
 *   again with a new request id: destructive, not idempotent (a retry that fails again can
 *   be retried again), open world.
 * - cancel-refund: final and irreversible (destructive); a second identical call changes
 *   nothing more (409 invalid_state), so idempotent; open world (cancels at Cobo too).
 */
export const TOOLS: ToolSpec[] = [
  {
    name: 'create-refund',
    title: 'Create a refund',
    description:
      'Refund (part of) a paid payment at its provider. Merchant keys only; the refund belongs to the key’s merchant. ' +
      'This moves money back to the payer once processed; it can be canceled only while pending_approval, queued or requires_action. ' +
      'Returns { refund, replayed }: status queued (or pending_approval); replayed is true when idempotency_key was used before with the same arguments. ' +
      'Errors carry the REST problem codes (validation_failed, idempotency_key_required, idempotency_key_reused, payment_not_found, ' +
      'payment_not_refundable, currency_mismatch, amount_exceeds_refundable, provider_not_configured, forbidden).',
    input: CREATE_REFUND_INPUT,
    annotations: { title: 'Create a refund', readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: true },
  },
  {
    name: 'get-refund',
    title: 'Read a refund',
    description: 'One refund by id (merchant: own refunds only; another merchant’s is not_found). Returns the refund object.',
    input: GET_REFUND_INPUT,
    annotations: { title: 'Read a refund', readOnlyHint: true, openWorldHint: false },
  },
  {
    name: 'list-refunds',
    title: 'List refunds',
    description: 'Refunds newest first, filtered, paginated: { data: [refund], nextCursor }. Merchants see only their own.',
    input: LIST_REFUNDS_INPUT,
    annotations: { title: 'List refunds', readOnlyHint: true, openWorldHint: false },
  },
  {
    name: 'retry-refund',
    title: 'Retry a failed refund',
    description:
      'ops and admin keys only. Only a failed refund (not flagged for review): back to queued as a new submission with a new provider request id, ' +
      'after the over-refund guard is checked again; it may pay out. Anything else is invalid_state.',
    input: RETRY_REFUND_INPUT,
    annotations: { title: 'Retry a failed refund', readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true },
  },
  {
    name: 'cancel-refund',
    title: 'Cancel a refund',
    description:
      'Owning merchant, ops or admin. From pending_approval, queued or requires_action (a Cobo refund is canceled at Cobo too); ' +
      'canceled is final. Anything else is invalid_state.',
    input: CANCEL_REFUND_INPUT,
    annotations: { title: 'Cancel a refund', readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: true },
  },
];
