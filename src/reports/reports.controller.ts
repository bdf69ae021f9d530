import { Controller, Get, Query, Res } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { ApiKeyAuth, ApiProblems } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { Roles } from '../auth/auth-context.js';
import { CsvExportService } from './csv-export.service.js';
import { ExportQuery, SummaryQuery } from './reports.dto.js';
import { ReportsService } from './reports.service.js';

/** Finance reports (refunds-api.md §7): finance, ops and admin; never merchants. */
@ApiTags('Reports')
@ApiKeyAuth()
@Controller('v1/reports')
export class ReportsController {
  constructor(
    private readonly reports: ReportsService,
    private readonly csv: CsvExportService,
  ) {}

  @Get('summary')
  @Roles('finance', 'ops')
  @ApiOperation({
    summary: 'Refund totals (finance, ops)',
    description: 'Counts and exact decimal sums, grouped by `groupBy` ⊆ provider, currency, status, merchant, day (default provider,currency,status; empty: one total row). `from` inclusive, `to` exclusive.',
  })
  @ApiOkResponse({ description: 'The groups.', schema: ref('ReportSummary') })
  @ApiProblems('validation_failed')
  summary(@Query() query: SummaryQuery) {
    return this.reports.summary(query);
  }

  @Get('refunds.csv')
  @Roles('finance', 'ops')
  @ApiOperation({
    summary: 'Every refund as CSV (finance, ops)',
    description: 'Streamed, one row per refund ordered by created_at, id, header row first. Cells starting with = + - @ tab or CR get a leading `\'`. At most 4 exports at once per process (429).',
  })
  @ApiProduces('text/csv')
  @ApiOkResponse({ description: 'CSV file.', content: { 'text/csv': { schema: { type: 'string' }, example: 'id,merchant_id,provider,payment_id,...\n' } } })
  @ApiProblems('validation_failed')
  async refundsCsv(@Query() query: ExportQuery, @Res() reply: FastifyReply): Promise<void> {
    await this.csv.export(query, reply);
  }
}
