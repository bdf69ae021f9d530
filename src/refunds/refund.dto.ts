import { Type } from 'class-transformer';
import {
  IsIn,
  IsObject,
  IsOptional,
  IsString,
  Length,
  Matches,
  ValidateNested,
  registerDecorator,
  ValidationOptions,
  IsInt,
  Min,
  Max,
  IsISO8601,
  IsDefined,
} from 'class-validator';
import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { PROVIDERS, type ProviderName } from '../providers/provider.js';
import { REFUND_REASONS, REFUND_STATUSES, type RefundReason } from './refund-status.js';

/** Decimal string, > 0 is checked by the service with the provider's precision. */
const AMOUNT_RE = /^(0|[1-9]\d{0,19})(\.\d{1,18})?$/;
const AMOUNT_MESSAGE = 'must be a decimal string such as "12.50" (no sign, exponent or spaces)';
/** OpenAPI description of a decimal amount (the same rule as AMOUNT_RE). */
const AMOUNT_DOC = { type: String, pattern: AMOUNT_RE.source, description: 'Decimal string (never a JSON number).' } as const;

/** metadata: at most 50 keys of up to 40 characters, string values up to 500 characters. */
function IsMetadata(options?: ValidationOptions) {
  return (object: object, propertyName: string) =>
    registerDecorator({
      name: 'isMetadata',
      target: object.constructor,
      propertyName,
      options: { message: 'metadata must be an object of at most 50 string values (keys up to 40, values up to 500 characters)', ...options },
      validator: {
        validate(value: unknown) {
          if (!value || typeof value !== 'object' || Array.isArray(value)) return false;
          const entries = Object.entries(value);
          return (
            entries.length <= 50 &&
            entries.every(([k, v]) => k.length >= 1 && k.length <= 40 && typeof v === 'string' && v.length <= 500)
          );
        },
      },
    });
}

export class MerchantFeeDto {
  @ApiProperty({ ...AMOUNT_DOC, description: 'Fee kept by the merchant; below the refund amount.', example: '0.10' })
  @IsString()
  @Matches(AMOUNT_RE, { message: `amount ${AMOUNT_MESSAGE}` })
  amount!: string;

  @ApiProperty({ minLength: 1, maxLength: 64, description: 'Must equal cobo.tokenId.', example: 'TRON_USDT' })
  @IsString()
  @Length(1, 64)
  tokenId!: string;
}

export class CoboOptionsDto {
  @ApiProperty({ minLength: 1, maxLength: 64, description: 'Cobo token id of the refund.', example: 'TRON_USDT' })
  @IsString()
  @Length(1, 64)
  tokenId!: string;

  @ApiPropertyOptional({ minLength: 1, maxLength: 256, description: 'Destination address; without it the refund waits in requires_action for PATCH.', example: 'TQ5NnVhV1eA7xVq9yD5Y3pZJ9f1uYqWcRk' })
  @IsOptional()
  @IsString()
  @Length(1, 256)
  toAddress?: string;

  @ApiPropertyOptional({ enum: ['merchant', 'psp'], default: 'merchant' })
  @IsOptional()
  @IsIn(['merchant', 'psp'])
  refundType?: 'merchant' | 'psp';

  @ApiPropertyOptional({ type: () => MerchantFeeDto, description: 'Only with refundType merchant.' })
  @IsOptional()
  @ValidateNested()
  @Type(() => MerchantFeeDto)
  merchantFee?: MerchantFeeDto;
}

export class LeanOptionsDto {
  @ApiPropertyOptional({
    enum: ['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED'],
    description: 'Defaults from `reason`.',
  })
  @IsOptional()
  @IsIn(['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED'])
  reasonCode?: string;
}

export class CreateRefundDto {
  @ApiProperty({ enum: PROVIDERS, example: 'binance_pay' })
  @IsIn(PROVIDERS as unknown as string[])
  provider!: ProviderName;

  @ApiProperty({ pattern: '^[\\x21-\\x7e]{1,128}$', description: 'The provider’s payment id (Binance prepayId, Cobo order id, Lean payment id).', example: '383729303729303' })
  @IsString()
  @Matches(/^[\x21-\x7e]{1,128}$/, { message: 'paymentId must be 1-128 printable characters without spaces' })
  paymentId!: string;

  @ApiProperty({ ...AMOUNT_DOC, description: 'Decimal string > 0 with at most the provider’s precision (Binance 8, Cobo 2, Lean 2 decimals).', example: '25.17' })
  @IsString()
  @Matches(AMOUNT_RE, { message: `amount ${AMOUNT_MESSAGE}` })
  amount!: string;

  @ApiProperty({ pattern: '^[A-Z0-9]{2,12}$', description: 'Must be the payment’s currency.', example: 'USDT' })
  @IsString()
  @Matches(/^[A-Z0-9]{2,12}$/, { message: 'currency must be 2-12 upper-case letters or digits' })
  currency!: string;

  @ApiPropertyOptional({ enum: REFUND_REASONS, default: 'requested_by_customer' })
  @IsOptional()
  @IsIn(REFUND_REASONS as unknown as string[])
  reason?: RefundReason;

  @ApiPropertyOptional({ maxLength: 500, example: 'order 1001 returned' })
  @IsOptional()
  @IsString()
  @Length(0, 500)
  description?: string;

  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: { type: 'string', maxLength: 500 },
    maxProperties: 50,
    description: 'At most 50 keys of up to 40 characters, string values up to 500 characters.',
    example: { orderId: '1001' },
  })
  @IsOptional()
  @IsObject()
  @IsMetadata()
  metadata?: Record<string, string>;

  @ApiPropertyOptional({ type: () => CoboOptionsDto, description: 'Cobo refunds only (tokenId required).' })
  @IsOptional()
  @ValidateNested()
  @Type(() => CoboOptionsDto)
  cobo?: CoboOptionsDto;

  @ApiPropertyOptional({ type: () => LeanOptionsDto, description: 'Lean refunds only.' })
  @IsOptional()
  @ValidateNested()
  @Type(() => LeanOptionsDto)
  lean?: LeanOptionsDto;
}

export class ListRefundsQuery {
  @ApiPropertyOptional({ enum: PROVIDERS })
  @IsOptional()
  @IsIn(PROVIDERS as unknown as string[])
  provider?: ProviderName;

  /** One status or a comma-separated list; checked by the service. */
  @ApiPropertyOptional({ description: `One status or a comma-separated list of: ${REFUND_STATUSES.join(', ')}.`, example: 'queued,processing' })
  @IsOptional()
  @IsString()
  @Length(1, 200)
  status?: string;

  @ApiPropertyOptional({ maxLength: 128, example: '383729303729303' })
  @IsOptional()
  @IsString()
  @Length(1, 128)
  paymentId?: string;

  @ApiPropertyOptional({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'ops, finance, admin: one merchant’s refunds (ignored for merchant keys).', example: 'M1001' })
  @IsOptional()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/)
  merchantId?: string;

  @ApiPropertyOptional({ format: 'date-time', description: 'created_at >= createdFrom (ISO 8601).', example: '2026-11-01T00:00:00Z' })
  @IsOptional()
  @IsISO8601({ strict: true })
  createdFrom?: string;

  @ApiPropertyOptional({ format: 'date-time', description: 'created_at < createdTo (ISO 8601).', example: '2026-12-01T00:00:00Z' })
  @IsOptional()
  @IsISO8601({ strict: true })
  createdTo?: string;

  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 100, default: 20 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;

  @ApiPropertyOptional({ maxLength: 200, description: 'The `nextCursor` of the previous page (opaque).' })
  @IsOptional()
  @IsString()
  @Length(1, 200)
  cursor?: string;

  @ApiPropertyOptional({ enum: ['true', 'false'], description: 'true: queued or processing and unchanged for longer than STUCK_AFTER_MS.' })
  @IsOptional()
  @IsIn(['true', 'false'])
  stuck?: 'true' | 'false';

  @ApiPropertyOptional({ maxLength: 64, description: 'The provider’s failure code.', example: '400304' })
  @IsOptional()
  @IsString()
  @Length(1, 64)
  failureCode?: string;

  @ApiPropertyOptional({ enum: ['retryable', 'final'] })
  @IsOptional()
  @IsIn(['retryable', 'final'])
  failureCategory?: 'retryable' | 'final';

  /** true: only refunds flagged for review (a provider contradicted a final outcome). */
  @ApiPropertyOptional({ enum: ['true', 'false'], description: 'true: only refunds flagged for review.' })
  @IsOptional()
  @IsIn(['true', 'false'])
  review?: 'true' | 'false';
}

export class OpsActionDto {
  @ApiPropertyOptional({ minLength: 1, maxLength: 500, description: 'Recorded with the refund event.', example: 'provider balance topped up' })
  @IsOptional()
  @IsString()
  @Length(1, 500)
  comment?: string;
}

export class BulkRetryDto {
  @ApiPropertyOptional({ enum: PROVIDERS })
  @IsOptional()
  @IsIn(PROVIDERS as unknown as string[])
  provider?: ProviderName;

  @ApiPropertyOptional({ maxLength: 64, example: '400304' })
  @IsOptional()
  @IsString()
  @Length(1, 64)
  failureCode?: string;

  @ApiPropertyOptional({ format: 'date-time', description: 'Failed at or after (ISO 8601).' })
  @IsOptional()
  @IsISO8601({ strict: true })
  failedFrom?: string;

  @ApiPropertyOptional({ format: 'date-time', description: 'Failed before (ISO 8601).' })
  @IsOptional()
  @IsISO8601({ strict: true })
  failedTo?: string;

  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 500, default: 100 })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(500)
  limit?: number;

  @ApiPropertyOptional({ minLength: 1, maxLength: 500 })
  @IsOptional()
  @IsString()
  @Length(1, 500)
  comment?: string;
}

export class CoboAddressDto {
  @ApiProperty({ minLength: 1, maxLength: 256, example: 'TQ5NnVhV1eA7xVq9yD5Y3pZJ9f1uYqWcRk' })
  @IsString()
  @Length(1, 256)
  @Matches(/^[\x21-\x7e]+$/, { message: 'toAddress must be printable characters without spaces' })
  toAddress!: string;
}

/** PATCH /v1/refunds/{id}: today only a Cobo destination address. */
export class UpdateRefundDto {
  @ApiProperty({ type: () => CoboAddressDto })
  @IsDefined({ message: 'cobo is required' })
  @IsObject()
  @ValidateNested()
  @Type(() => CoboAddressDto)
  cobo!: CoboAddressDto;
}

export class ResolveReviewDto {
  @ApiProperty({ minLength: 1, maxLength: 500, example: 'checked with Binance support: refund did not pay out' })
  @IsString()
  @Length(1, 500)
  comment!: string;
}
