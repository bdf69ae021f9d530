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
import { PROVIDERS, type ProviderName } from '../providers/provider.js';
import { REFUND_REASONS, type RefundReason } from './refund-status.js';

/** Decimal string, > 0 is checked by the service with the provider's precision. */
const AMOUNT_RE = /^(0|[1-9]\d{0,19})(\.\d{1,18})?$/;
const AMOUNT_MESSAGE = 'must be a decimal string such as "12.50" (no sign, exponent or spaces)';

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
  @IsString()
  @Matches(AMOUNT_RE, { message: `amount ${AMOUNT_MESSAGE}` })
  amount!: string;

  @IsString()
  @Length(1, 64)
  tokenId!: string;
}

export class CoboOptionsDto {
  @IsString()
  @Length(1, 64)
  tokenId!: string;

  @IsOptional()
  @IsString()
  @Length(1, 256)
  toAddress?: string;

  @IsOptional()
  @IsIn(['merchant', 'psp'])
  refundType?: 'merchant' | 'psp';

  @IsOptional()
  @ValidateNested()
  @Type(() => MerchantFeeDto)
  merchantFee?: MerchantFeeDto;
}

export class LeanOptionsDto {
  @IsOptional()
  @IsIn(['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED'])
  reasonCode?: string;
}

export class CreateRefundDto {
  @IsIn(PROVIDERS as unknown as string[])
  provider!: ProviderName;

  @IsString()
  @Matches(/^[\x21-\x7e]{1,128}$/, { message: 'paymentId must be 1-128 printable characters without spaces' })
  paymentId!: string;

  @IsString()
  @Matches(AMOUNT_RE, { message: `amount ${AMOUNT_MESSAGE}` })
  amount!: string;

  @IsString()
  @Matches(/^[A-Z0-9]{2,12}$/, { message: 'currency must be 2-12 upper-case letters or digits' })
  currency!: string;

  @IsOptional()
  @IsIn(REFUND_REASONS as unknown as string[])
  reason?: RefundReason;

  @IsOptional()
  @IsString()
  @Length(0, 500)
  description?: string;

  @IsOptional()
  @IsObject()
  @IsMetadata()
  metadata?: Record<string, string>;

  @IsOptional()
  @ValidateNested()
  @Type(() => CoboOptionsDto)
  cobo?: CoboOptionsDto;

  @IsOptional()
  @ValidateNested()
  @Type(() => LeanOptionsDto)
  lean?: LeanOptionsDto;
}

export class ListRefundsQuery {
  @IsOptional()
  @IsIn(PROVIDERS as unknown as string[])
  provider?: ProviderName;

  /** One status or a comma-separated list; checked by the service. */
  @IsOptional()
  @IsString()
  @Length(1, 200)
  status?: string;

  @IsOptional()
  @IsString()
  @Length(1, 128)
  paymentId?: string;

  @IsOptional()
  @Matches(/^[A-Za-z0-9_.-]{1,64}$/)
  merchantId?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  createdFrom?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  createdTo?: string;

  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(100)
  limit?: number;

  @IsOptional()
  @IsString()
  @Length(1, 200)
  cursor?: string;

  @IsOptional()
  @IsIn(['true', 'false'])
  stuck?: 'true' | 'false';

  @IsOptional()
  @IsString()
  @Length(1, 64)
  failureCode?: string;

  @IsOptional()
  @IsIn(['retryable', 'final'])
  failureCategory?: 'retryable' | 'final';

  /** true: only refunds flagged for review (a provider contradicted a final outcome). */
  @IsOptional()
  @IsIn(['true', 'false'])
  review?: 'true' | 'false';
}

export class OpsActionDto {
  @IsOptional()
  @IsString()
  @Length(1, 500)
  comment?: string;
}

export class BulkRetryDto {
  @IsOptional()
  @IsIn(PROVIDERS as unknown as string[])
  provider?: ProviderName;

  @IsOptional()
  @IsString()
  @Length(1, 64)
  failureCode?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  failedFrom?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  failedTo?: string;

  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(500)
  limit?: number;

  @IsOptional()
  @IsString()
  @Length(1, 500)
  comment?: string;
}

export class CoboAddressDto {
  @IsString()
  @Length(1, 256)
  @Matches(/^[\x21-\x7e]+$/, { message: 'toAddress must be printable characters without spaces' })
  toAddress!: string;
}

/** PATCH /v1/refunds/{id}: today only a Cobo destination address. */
export class UpdateRefundDto {
  @IsDefined({ message: 'cobo is required' })
  @IsObject()
  @ValidateNested()
  @Type(() => CoboAddressDto)
  cobo!: CoboAddressDto;
}

export class ResolveReviewDto {
  @IsString()
  @Length(1, 500)
  comment!: string;
}
