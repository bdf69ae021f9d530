import { Module } from '@nestjs/common';
import { McpController } from './mcp.controller.js';
import { McpService } from './mcp.service.js';

/** POST /mcp (HTTP roles only): the refund tools for MCP clients, on the REST services. */
@Module({
  controllers: [McpController],
  providers: [McpService],
})
export class McpModule {}
