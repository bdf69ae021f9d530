import { Global, Injectable, Logger, Module, OnModuleInit } from '@nestjs/common';
import { TypeOrmModule, InjectDataSource } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/config.js';
import { dataSourceOptions, runMigrations } from './data-source.js';
import { Database } from './database.js';

@Injectable()
class Migrator implements OnModuleInit {
  private readonly logger = new Logger('Migrations');
  constructor(
    private readonly cfg: AppConfig,
    @InjectDataSource() private readonly ds: DataSource,
  ) {}

  // Runs before any module that depends on the database initialises.
  async onModuleInit(): Promise<void> {
    if (!this.cfg.migrationsRun) return;
    const applied = await runMigrations(this.ds);
    if (applied.length) this.logger.log(`applied migrations: ${applied.join(', ')}`);
  }
}

@Global()
@Module({
  imports: [
    TypeOrmModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (cfg: AppConfig) => ({ ...dataSourceOptions(cfg), retryAttempts: 3, retryDelay: 1000 }),
    }),
  ],
  providers: [Database, Migrator],
  exports: [Database],
})
export class DatabaseModule {}
