import { Body, Controller, Get, HttpCode, Param, ParseUUIDPipe, Post, Query } from '@nestjs/common';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { CreateReconciliationDto, ListReconciliationsQuery } from './reconciliation.dto.js';
import { ReconciliationService } from './reconciliation.service.js';

const RunId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such reconciliation run.') });

/**
 * Reconciliation runs (refunds-api.md §7) for finance, ops and admin (admin is always
 * allowed by the guard). Starting a run changes no refund: it only reads both sides.
 */
@Controller('v1/reconciliations')
export class ReconciliationController {
  constructor(private readonly runs: ReconciliationService) {}

  @Post()
  @HttpCode(202)
  @Roles('finance', 'ops')
  create(@Auth() auth: AuthContext, @Body() dto: CreateReconciliationDto) {
    return this.runs.create(auth, dto);
  }

  @Get()
  @Roles('finance', 'ops')
  list(@Query() query: ListReconciliationsQuery) {
    return this.runs.list(query);
  }

  @Get(':id')
  @Roles('finance', 'ops')
  get(@Param('id', RunId()) id: string) {
    return this.runs.get(id);
  }
}
