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
  @IsString()
  @MaxLength(2048)
  @IsWebhookUrl()
  url!: string;
}

export class ListWebhookEndpointsQuery {
  /** ops/admin only: one merchant's endpoints. */
  @IsOptional()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/)
  merchantId?: string;
}

export class ListDeliveriesQuery {
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;
}
