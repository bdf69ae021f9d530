import { Body, Controller, Delete, Get, HttpCode, Param, ParseUUIDPipe, Post, Query } from '@nestjs/common';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { CreateWebhookEndpointDto, ListDeliveriesQuery, ListWebhookEndpointsQuery } from './webhook-endpoint.dto.js';
import { WebhookEndpointsService } from './webhook-endpoints.service.js';

const EndpointId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such webhook endpoint.') });
const DeliveryId = () => new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such delivery.') });

/**
 * Outbound merchant webhooks (refunds-api.md §10). Create and delete with the merchant's
 * own key only; reads and redelivery also for ops (and admin, always allowed by the guard).
 */
@Controller('v1/webhook-endpoints')
export class WebhookEndpointsController {
  constructor(private readonly endpoints: WebhookEndpointsService) {}

  @Post()
  @Roles('merchant')
  create(@Auth() auth: AuthContext, @Body() dto: CreateWebhookEndpointDto) {
    return this.endpoints.create(auth, dto.url);
  }

  @Get()
  @Roles('merchant', 'ops')
  list(@Auth() auth: AuthContext, @Query() query: ListWebhookEndpointsQuery) {
    return this.endpoints.list(auth, query.merchantId);
  }

  @Get(':id')
  @Roles('merchant', 'ops')
  get(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string) {
    return this.endpoints.get(auth, id);
  }

  @Delete(':id')
  @HttpCode(204)
  @Roles('merchant')
  async remove(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string): Promise<void> {
    await this.endpoints.disable(auth, id);
  }

  @Get(':id/deliveries')
  @Roles('merchant', 'ops')
  deliveries(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string, @Query() query: ListDeliveriesQuery) {
    return this.endpoints.deliveries(auth, id, query.limit ?? 20);
  }

  @Post(':id/deliveries/:deliveryId/redeliver')
  @HttpCode(202)
  @Roles('merchant', 'ops')
  redeliver(@Auth() auth: AuthContext, @Param('id', EndpointId()) id: string, @Param('deliveryId', DeliveryId()) deliveryId: string) {
    return this.endpoints.redeliver(auth, id, deliveryId);
  }
}
