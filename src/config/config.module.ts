import { DynamicModule, Global, Module } from '@nestjs/common';
import { AppConfig } from './config.js';

/** Makes the validated AppConfig injectable everywhere. */
@Global()
@Module({})
export class ConfigModule {
  static forRoot(cfg: AppConfig): DynamicModule {
    return { module: ConfigModule, providers: [{ provide: AppConfig, useValue: cfg }], exports: [AppConfig] };
  }
}
