// One Nest app with a route shaped like POST /v1/refunds — a class-validator DTO through a
// global ValidationPipe, a header, a 202 with a refund-sized JSON body — served by the
// Express adapter (configured as src/app.ts configured the service until round 14: raw body
// kept, JSON body parser with a 64 kB limit, no X-Powered-By) or by the Fastify adapter with
// the same settings (the service runs on Fastify since round 14, docs/performance.md finding 43). argv: <express|fastify> <port>. GET /__cpu answers the process's CPU time.
import 'reflect-metadata';
import { Body, Controller, Get, Headers, HttpCode, INestApplication, Module, Post, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { IsIn, IsObject, IsOptional, IsString, Matches, MaxLength } from 'class-validator';
import { randomUUID } from 'node:crypto';

class CreateRefundDto {
  @IsString() @MaxLength(64) payment_id!: string;
  @IsString() @Matches(/^\d{1,18}(\.\d{1,18})?$/) amount!: string;
  @IsString() @IsIn(['USD', 'EUR', 'USDT', 'SAR']) currency!: string;
  @IsOptional() @IsString() @MaxLength(500) reason?: string;
  @IsOptional() @IsObject() metadata?: Record<string, string>;
}

@Controller()
class RefundsController {
  @Post('v1/refunds')
  @HttpCode(202)
  create(@Body() body: CreateRefundDto, @Headers('idempotency-key') key: string) {
    const now = new Date().toISOString();
    return {
      id: randomUUID(),
      object: 'refund',
      payment_id: body.payment_id,
      amount: body.amount,
      currency: body.currency,
      status: 'pending',
      provider: 'binance_pay',
      provider_refund_id: null,
      reason: body.reason ?? null,
      metadata: body.metadata ?? {},
      idempotency_key: key,
      failure: null,
      created_at: now,
      updated_at: now,
      completed_at: null,
    };
  }

  @Get('__cpu')
  cpu() {
    const u = process.cpuUsage();
    return { us: u.user + u.system };
  }
}

@Module({ controllers: [RefundsController] })
class AppModule {}

async function main(): Promise<void> {
  const [kind, port] = [process.argv[2], Number(process.argv[3])];
  let app: INestApplication;
  if (kind === 'fastify') {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    app = await NestFactory.create(AppModule, new FastifyAdapter({ bodyLimit: 64 * 1024 }), { logger: false, rawBody: true });
  } else {
    const express = await NestFactory.create<NestExpressApplication>(AppModule, { logger: false, rawBody: true, bodyParser: false });
    express.disable('x-powered-by');
    express.useBodyParser('json', { limit: '64kb' });
    app = express;
  }
  app.useGlobalPipes(new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true }));
  await app.listen(port, '127.0.0.1');
  process.send?.('ready');
}

// --cpu-prof writes its profile on a normal exit.
process.on('SIGTERM', () => process.exit(0));
void main();
