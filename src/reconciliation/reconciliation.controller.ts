import { Body, Controller, Get, HttpCode, Param, ParseUUIDPipe, Post, Query } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { CreateReconciliationDto, ListReconciliationsQuery } from './reconciliation.dto.js';
import { ApiKeyAuth, ApiProblems, BODY_PROBLEMS } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { ReconciliationService } from './reconciliation.service.js';

const RunId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such reconciliation run.') });

/**
 * Reconciliation runs (refunds-api.md §7) for finance, ops and admin (admin is always
 * allowed by the guard). Starting a run changes no refund: it only reads both sides.
 */
@ApiTags('Reconciliation')
@ApiKeyAuth()
@Controller('v1/reconciliations')
export class ReconciliationController {
  constructor(private readonly runs: ReconciliationService) {}

  @Post()
  @HttpCode(202)
  @Roles('finance', 'ops')
  @ApiOperation({
    summary: 'Start a reconciliation run (finance, ops)',
    description: 'Compares the provider’s refunds of the window [from, to) (at most 31 days, from not in the future) with ours. Changes nothing.',
  })
  @ApiAcceptedResponse({ description: 'The run, queued.', schema: ref('ReconciliationAccepted') })
  @ApiProblems(...BODY_PROBLEMS, 'provider_not_configured')
  create(@Auth() auth: AuthContext, @Body() dto: CreateReconciliationDto) {
    return this.runs.create(auth, dto);
  }

  @Get()
  @Roles('finance', 'ops')
  @ApiOperation({ summary: 'List reconciliation runs', description: 'Newest first, without their mismatches.' })
  @ApiOkResponse({ description: 'The runs.', schema: ref('ReconciliationRunList') })
  @ApiProblems('validation_failed')
  list(@Query() query: ListReconciliationsQuery) {
    return this.runs.list(query);
  }

  @Get(':id')
  @Roles('finance', 'ops')
  @ApiOperation({ summary: 'Read a reconciliation run', description: 'With its mismatches (at most 10,000; `mismatchesTruncated` says when more).' })
  @ApiParam({ name: 'id', format: 'uuid' })
  @ApiOkResponse({ description: 'The run.', schema: ref('ReconciliationRunDetail') })
  @ApiProblems('not_found')
  get(@Param('id', RunId()) id: string) {
    return this.runs.get(id);
  }
}
