import { DynamicModule, Global, Module } from '@nestjs/common';
import { WorkerRedis } from '../processing/queues.js';
import { AppConfig } from './config.js';

/**
 * Makes the validated AppConfig injectable everywhere, and the workers' Redis connection: it
 * lives in this global module, first of all, so that Nest closes it after everything else.
 */
@Global()
@Module({})
export class ConfigModule {
  static forRoot(cfg: AppConfig): DynamicModule {
    return {
      module: ConfigModule,
      providers: [{ provide: AppConfig, useValue: cfg }, WorkerRedis],
      exports: [AppConfig, WorkerRedis],
    };
  }
}
