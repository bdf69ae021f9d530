import { Controller, Get } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { Auth, type AuthContext, ROLES, Roles } from '../auth/auth-context.js';
import { ApiKeyAuth } from '../openapi/problems.js';

/**
 * `GET /v1/me` (every role): who the presented key is, so a client (the ops console) can
 * tell which screens and actions to offer → 200 `{ "role", "merchantId" }` (`merchantId`
 * null except for merchant keys). Never the key, its hash or its id. The API still checks
 * every call; this only saves a client from guessing its role by trial and error.
 */
@ApiTags('API keys')
@ApiKeyAuth()
@Controller('v1/me')
export class MeController {
  @Get()
  @Roles('merchant', 'ops', 'finance')
  @ApiOperation({
    summary: 'Who this API key is (every role)',
    description: 'The role of the presented key and, for merchant keys, its merchant id. Never the key, its hash or its id.',
  })
  @ApiOkResponse({
    description: 'The key’s role.',
    schema: {
      type: 'object',
      required: ['role', 'merchantId'],
      properties: {
        role: { type: 'string', enum: [...ROLES] },
        merchantId: { type: 'string', nullable: true, description: 'Set for merchant keys only.' },
      },
      example: { role: 'merchant', merchantId: 'M1001' },
    },
  })
  me(@Auth() auth: AuthContext): { role: AuthContext['role']; merchantId: string | null } {
    return { role: auth.role, merchantId: auth.merchantId };
  }
}
