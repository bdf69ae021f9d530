import { Body, Controller, Delete, HttpCode, Param, ParseUUIDPipe, Post } from '@nestjs/common';
import { ApiCreatedResponse, ApiNoContentResponse, ApiOperation, ApiParam, ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { IsIn, IsOptional, IsString, Length, Matches } from 'class-validator';
import { ApiKeyAuth, ApiProblems, BODY_PROBLEMS } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { Problem } from '../common/problem.js';
import { ApiKeysService } from './api-keys.service.js';
import { Auth, type AuthContext, ROLES, Roles, type ApiRole } from './auth-context.js';

export class CreateApiKeyDto {
  @ApiProperty({ enum: ROLES, example: 'merchant' })
  @IsIn(ROLES as unknown as string[])
  role!: ApiRole;

  @ApiPropertyOptional({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'Required for merchant keys, forbidden otherwise.', example: 'M1001' })
  @IsOptional()
  @IsString()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/, { message: 'merchantId must be 1-64 letters, digits, "_", "." or "-"' })
  merchantId?: string;

  @ApiProperty({ minLength: 1, maxLength: 200, example: 'shop' })
  @IsString()
  @Length(1, 200)
  name!: string;
}

@ApiTags('API keys')
@ApiKeyAuth()
@Controller('v1/api-keys')
@Roles('admin')
export class ApiKeysController {
  constructor(private readonly keys: ApiKeysService) {}

  @Post()
  @HttpCode(201)
  @ApiOperation({ summary: 'Create an API key (admin)', description: 'The key is in this response only; only its SHA-256 is stored. Audited.' })
  @ApiCreatedResponse({ description: 'The key.', schema: ref('ApiKeyCreated') })
  @ApiProblems(...BODY_PROBLEMS)
  create(@Body() dto: CreateApiKeyDto, @Auth() auth: AuthContext) {
    return this.keys.create(dto, auth);
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Revoke an API key (admin)', description: 'It fails on its next request. Audited.' })
  @ApiParam({ name: 'id', format: 'uuid' })
  @ApiNoContentResponse({ description: 'Revoked.' })
  @ApiProblems('not_found')
  async revoke(
    @Param('id', new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such API key.') })) id: string,
    @Auth() auth: AuthContext,
  ): Promise<void> {
    await this.keys.revoke(id, auth);
  }
}
