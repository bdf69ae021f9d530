import { Body, Controller, Get, Headers, HttpCode, Param, ParseUUIDPipe, Patch, Post, Query, Req, Res, UseInterceptors } from '@nestjs/common';
import { ApiAcceptedResponse, ApiBody, ApiHeader, ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiKeyAuth, ApiProblems, BODY_PROBLEMS } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { BulkRetryDto, CreateRefundDto, ListRefundsQuery, OpsActionDto, ResolveReviewDto, UpdateRefundDto } from './refund.dto.js';
import { RefundActionsService } from './refund-actions.service.js';
import { toRefundJson } from './refund.row.js';
import { RefundsService } from './refunds.service.js';
import { RequireIdempotencyKey } from './idempotency-key.interceptor.js';

const RefundId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such refund.') });

const IdParam = () => ApiParam({ name: 'id', description: 'Refund id (UUID); anything else is 404 not_found.', format: 'uuid' });
const RATE_LIMIT_HEADERS = {
  'RateLimit-Limit': { description: 'Requests per minute allowed for this key.', schema: { type: 'integer' } },
  'RateLimit-Remaining': { description: 'Requests left in the burst budget.', schema: { type: 'integer' } },
  'RateLimit-Reset': { description: 'Seconds until the budget is full again.', schema: { type: 'integer' } },
} as const;
const refundResponse = (description: string) => ({ description, schema: ref('Refund'), headers: RATE_LIMIT_HEADERS });

@ApiTags('Refunds')
@ApiKeyAuth()
@Controller('v1/refunds')
export class RefundsController {
  constructor(
    private readonly refunds: RefundsService,
    private readonly actions: RefundActionsService,
  ) {}

  @Post()
  @Roles('merchant')
  @UseInterceptors(RequireIdempotencyKey)
  @ApiOperation({
    summary: 'Create a refund (merchant)',
    description:
      'Checks the payment at the provider (first time it is referenced), the over-refund guard and the provider rules, then ' +
      'persists the refund (202, status queued or pending_approval). The same Idempotency-Key with the same body answers 200 ' +
      'with the refund’s current state and `Idempotent-Replayed: true`; with another body 409 idempotency_key_reused. ' +
      'Only the block of the chosen provider (cobo, lean) may be present.',
  })
  @ApiHeader({
    name: 'Idempotency-Key',
    required: true,
    description: '1-255 printable ASCII characters, unique per refund you mean to make.',
    schema: { type: 'string', minLength: 1, maxLength: 255, example: 'order-1001-refund-1' },
  })
  @ApiBody({
    type: CreateRefundDto,
    examples: {
      binance_pay: {
        summary: 'Binance Pay',
        value: { provider: 'binance_pay', paymentId: '383729303729303', amount: '25.17', currency: 'USDT', reason: 'requested_by_customer' },
      },
      cobo: {
        summary: 'Cobo, with a destination address and a merchant fee',
        value: {
          provider: 'cobo',
          paymentId: 'O20250304-M1001-1001',
          amount: '12.50',
          currency: 'USDT',
          reason: 'requested_by_customer',
          description: 'order 1001 returned',
          metadata: { orderId: '1001' },
          cobo: { tokenId: 'TRON_USDT', toAddress: 'TQ5NnVhV1eA7xVq9yD5Y3pZJ9f1uYqWcRk', refundType: 'merchant', merchantFee: { amount: '0.10', tokenId: 'TRON_USDT' } },
        },
      },
      lean: {
        summary: 'Lean (AED)',
        value: { provider: 'lean', paymentId: '6c2f6a9e-3b4c-4d1e-9f0a-1b2c3d4e5f60', amount: '10.10', currency: 'AED', reason: 'duplicate', lean: { reasonCode: 'DUPLICATED_PAYMENT' } },
      },
    },
  })
  @ApiAcceptedResponse(refundResponse('Accepted: the refund is persisted and queued (or held in pending_approval).'))
  @ApiOkResponse({
    ...refundResponse('Replay of an earlier request with the same Idempotency-Key and body: the refund’s current state.'),
    headers: { ...RATE_LIMIT_HEADERS, 'Idempotent-Replayed': { description: 'Always `true` on a replay.', schema: { type: 'string', enum: ['true'] } } },
  })
  @ApiProblems(
    ...BODY_PROBLEMS,
    'idempotency_key_required',
    'idempotency_key_reused',
    'payment_not_found',
    'payment_not_refundable',
    'currency_mismatch',
    'amount_exceeds_refundable',
    'provider_not_configured',
  )
  async create(
    @Auth() auth: AuthContext,
    @Headers('idempotency-key') key: string,
    @Body() dto: CreateRefundDto,
    @Req() req: FastifyRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
  ) {
    if (auth.role !== 'merchant') {
      throw new Problem('forbidden', 'Refunds are created with a merchant key.');
    }
    // Fastify's clock, from the request's routing; it runs because Nest's Fastify adapter adds an
    // onResponse hook (0, and not observed, if it did not).
    const { refund, replayed } = await this.refunds.create(auth, key, dto, req.body, reply.elapsedTime);
    if (replayed) {
      reply.status(200).header('Idempotent-Replayed', 'true');
    } else {
      reply.status(202);
    }
    return refund;
  }

  @Post('retry')
  @HttpCode(202)
  @Roles('ops')
  @ApiTags('Refund operations')
  @ApiOperation({
    summary: 'Retry failed refunds in bulk (ops)',
    description: 'Failed refunds matching the filter (not flagged for review), oldest failure first; each one as POST /v1/refunds/{id}/retry. Refunds that cannot be retried are listed in `skipped` with their problem code.',
  })
  @ApiAcceptedResponse({ description: 'What was retried and what was skipped.', schema: ref('BulkRetryResult') })
  @ApiProblems(...BODY_PROBLEMS)
  retryMany(@Auth() auth: AuthContext, @Body() dto: BulkRetryDto) {
    return this.actions.retryMany(auth, dto);
  }

  @Get()
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({
    summary: 'List refunds',
    description: 'Newest first, cursor-paginated (stable under concurrent inserts). Merchants see only their own refunds; `merchantId` filters for the other roles.',
  })
  @ApiOkResponse({ description: 'One page of refunds.', schema: ref('RefundList'), headers: RATE_LIMIT_HEADERS })
  @ApiProblems('validation_failed')
  list(@Auth() auth: AuthContext, @Query() query: ListRefundsQuery) {
    return this.refunds.list(auth, query);
  }

  @Get(':id')
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({ summary: 'Read a refund', description: 'Another merchant’s refund is 404, as if it did not exist.' })
  @IdParam()
  @ApiOkResponse(refundResponse('The refund.'))
  @ApiProblems('not_found')
  async get(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return toRefundJson(await this.refunds.get(auth, id));
  }

  @Get(':id/attempts')
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({ summary: 'Provider calls made for a refund', description: 'Every call to the provider, in order, with its provider request id and outcome.' })
  @IdParam()
  @ApiOkResponse({ description: 'The attempts.', schema: ref('RefundAttemptList') })
  @ApiProblems('not_found')
  attempts(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.refunds.attempts(auth, id);
  }

  @Get(':id/events')
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({ summary: 'Status changes of a refund', description: 'Every status change with its actor (audit trail). Merchants see `ops` for keys not their own.' })
  @IdParam()
  @ApiOkResponse({ description: 'The events, oldest first.', schema: ref('RefundEventList') })
  @ApiProblems('not_found')
  events(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.refunds.events(auth, id);
  }

  @Patch(':id')
  @Roles('merchant')
  @ApiOperation({
    summary: 'Give a Cobo refund its destination address (owning merchant)',
    description: 'Only in requires_action: updates the address at Cobo and moves the refund to processing.',
  })
  @IdParam()
  @ApiBody({ type: UpdateRefundDto, examples: { cobo: { summary: 'Address', value: { cobo: { toAddress: 'TQ5NnVhV1eA7xVq9yD5Y3pZJ9f1uYqWcRk' } } } } })
  @ApiOkResponse(refundResponse('The refund, now processing.'))
  @ApiProblems(...BODY_PROBLEMS, 'not_found', 'invalid_state')
  update(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: UpdateRefundDto) {
    if (auth.role !== 'merchant') throw new Problem('forbidden', 'Only the owning merchant updates a refund.');
    return this.actions.updateAddress(auth, id, dto.cobo.toAddress);
  }

  @Post(':id/cancel')
  @HttpCode(200)
  @Roles('merchant', 'ops')
  @ApiOperation({
    summary: 'Cancel a refund (owning merchant, ops)',
    description: 'From pending_approval, queued or requires_action (a Cobo refund is canceled at Cobo too); anything else is 409 invalid_state.',
  })
  @IdParam()
  @ApiOkResponse(refundResponse('The refund, now canceled.'))
  @ApiProblems('not_found', 'invalid_state')
  cancel(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.actions.cancel(auth, id);
  }

  @Post(':id/retry')
  @HttpCode(202)
  @Roles('ops')
  @ApiTags('Refund operations')
  @ApiOperation({
    summary: 'Retry a failed refund (ops)',
    description:
      'failed → queued as a new submission with a new provider request id, after the over-refund guard and the provider’s limits are checked again. Anything else (or a refund flagged for review) is 409 invalid_state.',
  })
  @IdParam()
  @ApiBody({ type: OpsActionDto, required: false })
  @ApiAcceptedResponse(refundResponse('The refund, queued again.'))
  @ApiProblems(...BODY_PROBLEMS, 'not_found', 'invalid_state', 'payment_not_found', 'amount_exceeds_refundable')
  retry(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: OpsActionDto) {
    return this.actions.retry(auth, id, dto.comment);
  }

  @Post(':id/approve')
  @HttpCode(200)
  @Roles('ops')
  @ApiTags('Refund operations')
  @ApiOperation({ summary: 'Approve a refund held in pending_approval (ops)', description: 'Moves it to queued. Never by the key that created the refund (403 forbidden).' })
  @IdParam()
  @ApiBody({ type: OpsActionDto, required: false })
  @ApiOkResponse(refundResponse('The refund, now queued.'))
  @ApiProblems(...BODY_PROBLEMS, 'not_found', 'invalid_state')
  approve(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: OpsActionDto) {
    return this.actions.approve(auth, id, dto.comment);
  }

  @Post(':id/reject')
  @HttpCode(200)
  @Roles('ops')
  @ApiTags('Refund operations')
  @ApiOperation({ summary: 'Reject a refund held in pending_approval (ops)', description: 'Moves it to canceled and releases its amount.' })
  @IdParam()
  @ApiBody({ type: OpsActionDto, required: false })
  @ApiOkResponse(refundResponse('The refund, now canceled.'))
  @ApiProblems(...BODY_PROBLEMS, 'not_found', 'invalid_state')
  reject(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: OpsActionDto) {
    return this.actions.reject(auth, id, dto.comment);
  }

  @Post(':id/review/resolve')
  @HttpCode(200)
  @Roles('ops')
  @ApiTags('Refund operations')
  @ApiOperation({ summary: 'Clear a review flag (ops)', description: 'A person looked at a refund whose provider outcome contradicted ours; audited with the comment.' })
  @IdParam()
  @ApiBody({ type: ResolveReviewDto })
  @ApiOkResponse(refundResponse('The refund, no longer flagged.'))
  @ApiProblems(...BODY_PROBLEMS, 'not_found', 'invalid_state')
  resolveReview(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: ResolveReviewDto) {
    return this.actions.resolveReview(auth, id, dto.comment);
  }

  @Post(':id/sync')
  @HttpCode(202)
  @Roles('ops')
  @ApiTags('Refund operations')
  @ApiOperation({
    summary: 'Ask the provider now (ops)',
    description: 'A refund in flight is made due at once; a final one is compared with the provider (a contradiction is flagged for review, never applied).',
  })
  @IdParam()
  @ApiAcceptedResponse(refundResponse('The refund as known after the check.'))
  @ApiProblems('not_found')
  sync(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.actions.sync(auth, id);
  }
}
