import { Module } from '@nestjs/common';
import { CsvExportService } from './csv-export.service.js';
import { ReportsController } from './reports.controller.js';
import { ReportsService } from './reports.service.js';

/** Finance reports: the summary and the streamed CSV export (HTTP only). */
@Module({
  controllers: [ReportsController],
  providers: [ReportsService, CsvExportService],
})
export class ReportsModule {}
