import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsInt, IsOptional, IsString, Matches, Max, MaxLength, Min, registerDecorator, ValidationOptions } from 'class-validator';
import { webhookUrlProblem } from './webhook-http.js';

/** An absolute http(s) URL with a host and no credentials (public-address rules are the service's). */
function IsWebhookUrl(options?: ValidationOptions) {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name: 'isWebhookUrl',
      target: object.constructor,
      propertyName,
      options: { message: 'url must be an absolute http or https URL with a host and no credentials', ...options },
      validator: {
        validate(value: unknown) {
          return typeof value === 'string' && webhookUrlProblem(value, true) === undefined;
        },
      },
    });
}

export class CreateWebhookEndpointDto {
  @ApiProperty({ format: 'uri', maxLength: 2048, description: 'Absolute http(s) URL without credentials.', example: 'https://shop.example/hooks/refunds' })
  @IsString()
  @MaxLength(2048)
  @IsWebhookUrl()
  url!: string;
}

export class ListWebhookEndpointsQuery {
  /** ops/admin only: one merchant's endpoints. */
  @ApiPropertyOptional({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'ops, admin: one merchant’s endpoints.', example: 'M1001' })
  @IsOptional()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/)
  merchantId?: string;
}

export class ListDeliveriesQuery {
  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 100, default: 20 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;
}
