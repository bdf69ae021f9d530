import { Body, Controller, Get, Headers, HttpCode, Param, ParseUUIDPipe, Patch, Post, Query, Req, Res, UseInterceptors } from '@nestjs/common';
import type { Request, Response } from 'express';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { BulkRetryDto, CreateRefundDto, ListRefundsQuery, OpsActionDto, ResolveReviewDto, UpdateRefundDto } from './refund.dto.js';
import { RefundActionsService } from './refund-actions.service.js';
import { toRefundJson } from './refund.row.js';
import { RefundsService } from './refunds.service.js';
import { RequireIdempotencyKey } from './idempotency-key.interceptor.js';

const RefundId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such refund.') });

@Controller('v1/refunds')
export class RefundsController {
  constructor(
    private readonly refunds: RefundsService,
    private readonly actions: RefundActionsService,
  ) {}

  @Post()
  @Roles('merchant')
  @UseInterceptors(RequireIdempotencyKey)
  async create(
    @Auth() auth: AuthContext,
    @Headers('idempotency-key') key: string,
    @Body() dto: CreateRefundDto,
    @Req() req: Request,
    @Res({ passthrough: true }) res: Response,
  ) {
    if (auth.role !== 'merchant') {
      throw new Problem('forbidden', 'Refunds are created with a merchant key.');
    }
    const { refund, replayed } = await this.refunds.create(auth, key, dto, req.body);
    if (replayed) {
      res.status(200).setHeader('Idempotent-Replayed', 'true');
    } else {
      res.status(202);
    }
    return refund;
  }

  @Post('retry')
  @HttpCode(202)
  @Roles('ops')
  retryMany(@Auth() auth: AuthContext, @Body() dto: BulkRetryDto) {
    return this.actions.retryMany(auth, dto);
  }

  @Get()
  @Roles('merchant', 'ops', 'finance')
  list(@Auth() auth: AuthContext, @Query() query: ListRefundsQuery) {
    return this.refunds.list(auth, query);
  }

  @Get(':id')
  @Roles('merchant', 'ops', 'finance')
  async get(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return toRefundJson(await this.refunds.get(auth, id));
  }

  @Get(':id/attempts')
  @Roles('merchant', 'ops', 'finance')
  attempts(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.refunds.attempts(auth, id);
  }

  @Get(':id/events')
  @Roles('merchant', 'ops', 'finance')
  events(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.refunds.events(auth, id);
  }

  @Patch(':id')
  @Roles('merchant')
  update(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: UpdateRefundDto) {
    if (auth.role !== 'merchant') throw new Problem('forbidden', 'Only the owning merchant updates a refund.');
    return this.actions.updateAddress(auth, id, dto.cobo.toAddress);
  }

  @Post(':id/cancel')
  @HttpCode(200)
  @Roles('merchant', 'ops')
  cancel(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.actions.cancel(auth, id);
  }

  @Post(':id/retry')
  @HttpCode(202)
  @Roles('ops')
  retry(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: OpsActionDto) {
    return this.actions.retry(auth, id, dto.comment);
  }

  @Post(':id/approve')
  @HttpCode(200)
  @Roles('ops')
  approve(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: OpsActionDto) {
    return this.actions.approve(auth, id, dto.comment);
  }

  @Post(':id/reject')
  @HttpCode(200)
  @Roles('ops')
  reject(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: OpsActionDto) {
    return this.actions.reject(auth, id, dto.comment);
  }

  @Post(':id/review/resolve')
  @HttpCode(200)
  @Roles('ops')
  resolveReview(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string, @Body() dto: ResolveReviewDto) {
    return this.actions.resolveReview(auth, id, dto.comment);
  }

  @Post(':id/sync')
  @HttpCode(202)
  @Roles('ops')
  sync(@Auth() auth: AuthContext, @Param('id', RefundId()) id: string) {
    return this.actions.sync(auth, id);
  }
}
