import { Body, Controller, Delete, HttpCode, Param, ParseUUIDPipe, Post } from '@nestjs/common';
import { IsIn, IsOptional, IsString, Length, Matches } from 'class-validator';
import { Problem } from '../common/problem.js';
import { ApiKeysService } from './api-keys.service.js';
import { Auth, type AuthContext, ROLES, Roles, type ApiRole } from './auth-context.js';

export class CreateApiKeyDto {
  @IsIn(ROLES as unknown as string[])
  role!: ApiRole;

  @IsOptional()
  @IsString()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/, { message: 'merchantId must be 1-64 letters, digits, "_", "." or "-"' })
  merchantId?: string;

  @IsString()
  @Length(1, 200)
  name!: string;
}

@Controller('v1/api-keys')
@Roles('admin')
export class ApiKeysController {
  constructor(private readonly keys: ApiKeysService) {}

  @Post()
  @HttpCode(201)
  create(@Body() dto: CreateApiKeyDto, @Auth() auth: AuthContext) {
    return this.keys.create(dto, auth);
  }

  @Delete(':id')
  @HttpCode(204)
  async revoke(
    @Param('id', new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such API key.') })) id: string,
    @Auth() auth: AuthContext,
  ): Promise<void> {
    await this.keys.revoke(id, auth);
  }
}
