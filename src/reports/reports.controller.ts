import { Controller, Get, Query, Res } from '@nestjs/common';
import type { Response } from 'express';
import { Roles } from '../auth/auth-context.js';
import { CsvExportService } from './csv-export.service.js';
import { ExportQuery, SummaryQuery } from './reports.dto.js';
import { ReportsService } from './reports.service.js';

/** Finance reports (refunds-api.md §7): finance, ops and admin; never merchants. */
@Controller('v1/reports')
export class ReportsController {
  constructor(
    private readonly reports: ReportsService,
    private readonly csv: CsvExportService,
  ) {}

  @Get('summary')
  @Roles('finance', 'ops')
  summary(@Query() query: SummaryQuery) {
    return this.reports.summary(query);
  }

  @Get('refunds.csv')
  @Roles('finance', 'ops')
  async refundsCsv(@Query() query: ExportQuery, @Res() res: Response): Promise<void> {
    await this.csv.export(query, res);
  }
}
