import { Controller, Delete, Get, Post, Req, Res } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Auth, type AuthContext, Roles } from '../auth/auth-context.js';
import { ApiKeyAuth, ApiProblems, PROBLEM_MEDIA_TYPE, PROBLEM_REF } from '../openapi/problems.js';
import { ref } from '../openapi/schemas.js';
import { MCP_PATH, McpService } from './mcp.service.js';

/** Every role may talk to the MCP server; each tool then applies its REST route's roles. */
const MCP_ROLES = ['merchant', 'ops', 'finance'] as const;

const METHOD_NOT_ALLOWED = {
  type: 'about:blank',
  title: 'Method not allowed',
  status: 405,
  code: 'method_not_allowed',
  detail: 'This MCP server is stateless: send JSON-RPC messages with POST /mcp; there is no session stream to open or delete.',
  instance: MCP_PATH,
};

/**
 * The MCP endpoint (refunds-api.md §10), behind ApiKeyGuard like every /v1 route: the same
 * Bearer keys, the same rate limit.
 *
 * Stateless streamable HTTP: every POST gets a new server and transport and nothing is kept
 * between requests. The tools are request/response (no server-initiated messages, no
 * progress streams), and any number of API processes may serve /mcp behind a load
 * balancer, so a session would only add state to share or pin (sticky routing) and a way
 * to outlive a revoked key. Each request is authenticated on its own, so revocation acts
 * at once. Hence GET (the server-to-client SSE stream) and DELETE (ending a session) are
 * 405, which MCP clients understand as "no stream offered".
 */
@ApiTags('MCP')
@ApiKeyAuth()
@Controller(MCP_PATH.slice(1))
export class McpController {
  constructor(private readonly mcp: McpService) {}

  @Post()
  @Roles(...MCP_ROLES)
  @ApiOperation({
    summary: 'MCP server (streamable HTTP, stateless)',
    description:
      'JSON-RPC 2.0 messages of the Model Context Protocol. Send `Accept: application/json, text/event-stream`. Tools: create-refund, ' +
      'get-refund, list-refunds, retry-refund, cancel-refund (list them with tools/list). Each tool has the roles of its REST route; ' +
      'tool errors are results with `isError: true` whose content is the problem body (with `code`). Malformed JSON-RPC is answered ' +
      'by the MCP transport with a JSON-RPC error (400, 406 without the Accept above, 415 without JSON).',
  })
  @ApiBody({
    schema: ref('JsonRpcMessage'),
    examples: {
      initialize: {
        summary: 'initialize',
        value: { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '1' } } },
      },
      list: { summary: 'tools/list', value: { jsonrpc: '2.0', id: 2, method: 'tools/list' } },
      call: {
        summary: 'tools/call get-refund',
        value: { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'get-refund', arguments: { id: '0b6c4a0e-6f0a-4d55-9d1c-2a8e51f1d7aa' } } },
      },
    },
  })
  @ApiOkResponse({
    description: 'The JSON-RPC response.',
    content: {
      'application/json': {
        schema: ref('JsonRpcMessage'),
        example: { jsonrpc: '2.0', id: 3, result: { isError: true, content: [{ type: 'text', text: '{"type":"about:blank","title":"Not found","status":404,"code":"not_found","detail":"No such refund.","instance":"/mcp"}' }] } },
      },
    },
  })
  @ApiResponse({ status: 202, description: 'A notification or response was accepted (no body).' })
  @ApiProblems('validation_failed', 'payload_too_large')
  async post(@Auth() auth: AuthContext, @Req() req: FastifyRequest, @Res() reply: FastifyReply): Promise<void> {
    await this.mcp.handle(auth, req, reply);
  }

  @Get()
  @Roles(...MCP_ROLES)
  @ApiOperation({ summary: 'Not offered: no server-to-client stream (stateless server)' })
  @ApiResponse({ status: 405, description: '`method_not_allowed`', headers: { Allow: { schema: { type: 'string', example: 'POST' } } }, content: { [PROBLEM_MEDIA_TYPE]: { schema: { $ref: PROBLEM_REF }, example: METHOD_NOT_ALLOWED } } })
  streamNotOffered(@Res() res: FastifyReply): void {
    this.methodNotAllowed(res);
  }

  @Delete()
  @Roles(...MCP_ROLES)
  @ApiOperation({ summary: 'Not offered: there are no sessions to end (stateless server)' })
  @ApiResponse({ status: 405, description: '`method_not_allowed`', headers: { Allow: { schema: { type: 'string', example: 'POST' } } }, content: { [PROBLEM_MEDIA_TYPE]: { schema: { $ref: PROBLEM_REF }, example: METHOD_NOT_ALLOWED } } })
  noSession(@Res() res: FastifyReply): void {
    this.methodNotAllowed(res);
  }

  private methodNotAllowed(res: FastifyReply): void {
    res.status(405).headers({ Allow: 'POST', 'Content-Type': PROBLEM_MEDIA_TYPE }).send(JSON.stringify(METHOD_NOT_ALLOWED));
  }
}
