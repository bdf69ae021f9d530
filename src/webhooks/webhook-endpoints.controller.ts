import { Body, Controller, Delete, Get, HttpCode, Param, ParseUUIDPipe, Post, Query } from '@nestjs/common';
import { ApiAcceptedResponse, ApiCreatedResponse, ApiNoContentResponse, ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { CreateWebhookEndpointDto, ListDeliveriesQuery, ListWebhookEndpointsQuery } from './webhook-endpoint.dto.js';
import { ApiKeyAuth, ApiProblems, BODY_PROBLEMS } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { WebhookEndpointsService } from './webhook-endpoints.service.js';

const EndpointId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such webhook endpoint.') });
const DeliveryId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such delivery.') });

/**
 * Outbound merchant webhooks (refunds-api.md §10). Create and delete with the merchant's
 * own key only; reads and redelivery also for ops (and admin, always allowed by the guard).
 */
@ApiTags('Webhook endpoints')
@ApiKeyAuth()
@Controller('v1/webhook-endpoints')
export class WebhookEndpointsController {
  constructor(private readonly endpoints: WebhookEndpointsService) {}

  @Post()
  @Roles('merchant')
  @ApiOperation({
    summary: 'Register a webhook endpoint (merchant)',
    description:
      'Events `refund.<status>` on every status change of the merchant’s refunds, signed with `Refund-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`. The secret is shown only in this response. At most 16 enabled endpoints per merchant.',
  })
  @ApiCreatedResponse({ description: 'The endpoint with its signing secret.', schema: ref('WebhookEndpointCreated') })
  @ApiProblems(...BODY_PROBLEMS)
  create(@Auth() auth: AuthContext, @Body() dto: CreateWebhookEndpointDto) {
    return this.endpoints.create(auth, dto.url);
  }

  @Get()
  @Roles('merchant', 'ops')
  @ApiOperation({ summary: 'List enabled webhook endpoints', description: 'A merchant sees its own; ops and admin may filter by merchantId.' })
  @ApiOkResponse({ description: 'The endpoints (never their secrets).', schema: ref('WebhookEndpointList') })
  @ApiProblems('validation_failed')
  list(@Auth() auth: AuthContext, @Query() query: ListWebhookEndpointsQuery) {
    return this.endpoints.list(auth, query.merchantId);
  }

  @Get(':id')
  @Roles('merchant', 'ops')
  @ApiOperation({ summary: 'Read a webhook endpoint' })
  @ApiParam({ name: 'id', format: 'uuid' })
  @ApiOkResponse({ description: 'The endpoint (never its secret).', schema: ref('WebhookEndpoint') })
  @ApiProblems('not_found')
  get(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string) {
    return this.endpoints.get(auth, id);
  }

  @Delete(':id')
  @HttpCode(204)
  @Roles('merchant')
  @ApiOperation({ summary: 'Disable a webhook endpoint (merchant)', description: 'Nothing more is sent; pending deliveries end failed; the history stays readable.' })
  @ApiParam({ name: 'id', format: 'uuid' })
  @ApiNoContentResponse({ description: 'Disabled.' })
  @ApiProblems('not_found')
  async remove(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string): Promise<void> {
    await this.endpoints.disable(auth, id);
  }

  @Get(':id/deliveries')
  @Roles('merchant', 'ops')
  @ApiOperation({ summary: 'Deliveries to an endpoint', description: 'Newest first.' })
  @ApiParam({ name: 'id', format: 'uuid' })
  @ApiOkResponse({ description: 'The deliveries.', schema: ref('WebhookDeliveryList') })
  @ApiProblems('validation_failed', 'not_found')
  deliveries(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string, @Query() query: ListDeliveriesQuery) {
    return this.endpoints.deliveries(auth, id, query.limit ?? 20);
  }

  @Post(':id/deliveries/:deliveryId/redeliver')
  @HttpCode(202)
  @Roles('merchant', 'ops')
  @ApiOperation({ summary: 'Send a delivery again', description: 'The same event (same body bytes) as a new attempt. Audited.' })
  @ApiParam({ name: 'id', format: 'uuid' })
  @ApiParam({ name: 'deliveryId', format: 'uuid' })
  @ApiAcceptedResponse({ description: 'The delivery, scheduled.', schema: ref('WebhookDelivery') })
  @ApiProblems('not_found')
  redeliver(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string, @Param('deliveryId', DeliveryId()) deliveryId: string) {
    return this.endpoints.redeliver(auth, id, deliveryId);
  }
}
