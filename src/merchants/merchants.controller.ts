import { Body, Controller, Get, Param, Put } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiOperation, ApiParam, ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsObject, IsOptional, IsString, Length, Matches, ValidateNested } from 'class-validator';
import { Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { ApiKeyAuth, ApiProblems, BODY_PROBLEMS } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { MerchantsService } from './merchants.service.js';

class ProviderAccountDto {
  @ApiProperty({ description: 'The merchant’s account id at the provider.', example: 'M_COBO_1001' })
  @IsString()
  @Matches(/^[\x21-\x7e]{1,128}$/, { message: 'merchantId must be 1-128 printable characters' })
  merchantId!: string;
}

export class PutMerchantDto {
  @ApiPropertyOptional({ minLength: 1, maxLength: 200, example: 'Shop' })
  @IsOptional()
  @IsString()
  @Length(1, 200)
  name?: string;

  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: { type: 'string' },
    description: 'Per currency: a refund with amount ≥ the threshold starts in pending_approval.',
    example: { USDT: '1000' },
  })
  @IsOptional()
  @IsObject()
  approvalThresholds?: Record<string, string>;

  @IsOptional()
  @ValidateNested()
  @Type(() => ProviderAccountDto)
  @ApiPropertyOptional({ type: () => ProviderAccountDto, description: 'Cobo payments must name this merchant id.' })
  cobo?: ProviderAccountDto;

  @IsOptional()
  @ValidateNested()
  @Type(() => ProviderAccountDto)
  @ApiPropertyOptional({ type: () => ProviderAccountDto })
  lean?: ProviderAccountDto;

  @IsOptional()
  @ValidateNested()
  @Type(() => ProviderAccountDto)
  @ApiPropertyOptional({ type: () => ProviderAccountDto })
  binancePay?: ProviderAccountDto;
}

const MERCHANT_ID = /^[A-Za-z0-9_.-]{1,64}$/;

@ApiTags('Merchants')
@ApiKeyAuth()
@Controller('v1/merchants')
@Roles('admin')
export class MerchantsController {
  constructor(private readonly merchants: MerchantsService) {}

  @Get(':id')
  @ApiOperation({ summary: 'Read a merchant’s settings (admin)' })
  @ApiParam({ name: 'id', description: 'Merchant id.', example: 'M1001' })
  @ApiOkResponse({ description: 'The merchant.', schema: ref('Merchant') })
  @ApiProblems('not_found')
  get(@Param('id') id: string) {
    if (!MERCHANT_ID.test(id)) throw new Problem('not_found', 'No such merchant.');
    return this.merchants.get(id);
  }

  @Put(':id')
  @ApiOperation({ summary: 'Create or update a merchant’s settings (admin)' })
  @ApiParam({ name: 'id', description: 'Merchant id (1-64 letters, digits, "_", "." or "-").', example: 'M1001' })
  @ApiBody({ type: PutMerchantDto })
  @ApiOkResponse({ description: 'The merchant.', schema: ref('Merchant') })
  @ApiProblems(...BODY_PROBLEMS)
  put(@Param('id') id: string, @Body() dto: PutMerchantDto) {
    if (!MERCHANT_ID.test(id)) throw Problem.validation([{ field: 'id', message: 'merchant ids are 1-64 letters, digits, "_", "." or "-"' }]);
    return this.merchants.put(id, dto);
  }
}
