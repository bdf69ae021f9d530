import { Body, Controller, Get, Param, Put } from '@nestjs/common';
import { Type } from 'class-transformer';
import { IsObject, IsOptional, IsString, Length, Matches, ValidateNested } from 'class-validator';
import { Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { MerchantsService } from './merchants.service.js';

class ProviderAccountDto {
  @IsString()
  @Matches(/^[\x21-\x7e]{1,128}$/, { message: 'merchantId must be 1-128 printable characters' })
  merchantId!: string;
}

export class PutMerchantDto {
  @IsOptional()
  @IsString()
  @Length(1, 200)
  name?: string;

  @IsOptional()
  @IsObject()
  approvalThresholds?: Record<string, string>;

  @IsOptional()
  @ValidateNested()
  @Type(() => ProviderAccountDto)
  cobo?: ProviderAccountDto;

  @IsOptional()
  @ValidateNested()
  @Type(() => ProviderAccountDto)
  lean?: ProviderAccountDto;

  @IsOptional()
  @ValidateNested()
  @Type(() => ProviderAccountDto)
  binancePay?: ProviderAccountDto;
}

const MERCHANT_ID = /^[A-Za-z0-9_.-]{1,64}$/;

@Controller('v1/merchants')
@Roles('admin')
export class MerchantsController {
  constructor(private readonly merchants: MerchantsService) {}

  @Get(':id')
  get(@Param('id') id: string) {
    if (!MERCHANT_ID.test(id)) throw new Problem('not_found', 'No such merchant.');
    return this.merchants.get(id);
  }

  @Put(':id')
  put(@Param('id') id: string, @Body() dto: PutMerchantDto) {
    if (!MERCHANT_ID.test(id)) throw Problem.validation([{ field: 'id', message: 'merchant ids are 1-64 letters, digits, "_", "." or "-"' }]);
    return this.merchants.put(id, dto);
  }
}
