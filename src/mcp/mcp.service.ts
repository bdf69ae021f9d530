import { Injectable, OnModuleInit, ParseUUIDPipe } from '@nestjs/common';
import { ModuleRef, Reflector } from '@nestjs/core';
// The low-level Server (which the SDK keeps "for advanced use cases"), not McpServer:
// McpServer answers arguments its zod schema refuses with a bare "Input validation error"
// text, and this service's errors must carry the REST problem codes (validation_failed with
// its field list, idempotency_key_required). The same zod schemas are published and applied.
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema, McpError, ErrorCode as RpcErrorCode, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { takeOverResponse } from '../common/http-reply.js';
import { z } from 'zod';
import { ApiRole, AuthContext, ROLES_KEY } from '../auth/auth-context.js';
import { Problem, type FieldError } from '../common/problem.js';
import { ProblemFilter } from '../common/problem.filter.js';
import { StrictValidationPipe } from '../common/validation.js';
import { CreateRefundDto, ListRefundsQuery, OpsActionDto } from '../refunds/refund.dto.js';
import { RefundActionsService } from '../refunds/refund-actions.service.js';
import { toRefundJson } from '../refunds/refund.row.js';
import { RefundsController } from '../refunds/refunds.controller.js';
import { RefundsService } from '../refunds/refunds.service.js';
import {
  CANCEL_REFUND_INPUT,
  CREATE_REFUND_INPUT,
  GET_REFUND_INPUT,
  LIST_REFUNDS_INPUT,
  RETRY_REFUND_INPUT,
  TOOLS,
  type ToolName,
} from './mcp-tools.js';

export const MCP_PATH = '/mcp';

/** The REST Idempotency-Key rule (RequireIdempotencyKey). */
const IDEMPOTENCY_KEY_RE = /^[\x20-\x7e]{1,255}$/;

/** Each tool answers for the REST route it mirrors: same roles (@Roles), same services. */
const REST_HANDLER: Record<ToolName, (...args: never[]) => unknown> = {
  'create-refund': RefundsController.prototype.create,
  'get-refund': RefundsController.prototype.get,
  'list-refunds': RefundsController.prototype.list,
  'retry-refund': RefundsController.prototype.retry,
  'cancel-refund': RefundsController.prototype.cancel,
};

/** Zod issues as the REST field list (`field` dotted, unknown members named like the pipe does). */
function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue): FieldError[] => {
    const field = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => {
        const f = field ? `${field}.${k}` : k;
        return { field: f, message: `${f} is not an allowed field` };
      });
    }
    return [{ field: field || 'arguments', message: `${field || 'arguments'}: ${issue.message}` }];
  });
}

/**
 * POST /mcp: a Model Context Protocol server over streamable HTTP, in stateless mode (a
 * fresh server and transport per request; see McpController for why). Tools call the same
 * services as the REST controllers with the caller's AuthContext, so validation, role
 * checks, merchant scoping and errors are the REST ones; every error is a tool result with
 * `isError: true` whose content is the RFC 9457 problem (with its `code`).
 */
@Injectable()
export class McpService implements OnModuleInit {
  private refunds!: RefundsService;
  private actions!: RefundActionsService;
  private readonly pipe = new StrictValidationPipe();
  private readonly problems = new ProblemFilter();

  constructor(
    private readonly moduleRef: ModuleRef,
    private readonly reflector: Reflector,
  ) {}

  onModuleInit(): void {
    // RefundsModule does not export its services; these are the very instances its controllers use.
    this.refunds = this.moduleRef.get(RefundsService, { strict: false });
    this.actions = this.moduleRef.get(RefundActionsService, { strict: false });
  }

  /** Serves one HTTP request (the guard has authenticated `auth` and counted the rate limit). */
  async handle(auth: AuthContext, req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const server = new Server({ name: 'refund-orchestrator', version: '1.0.0' }, { capabilities: { tools: {} } });
    server.setRequestHandler(ListToolsRequestSchema, () => ({
      tools: TOOLS.map((t) => ({
        name: t.name,
        title: t.title,
        description: t.description,
        inputSchema: z.toJSONSchema(t.input, { io: 'input' }) as { type: 'object'; [k: string]: unknown },
        annotations: t.annotations,
      })),
    }));
    server.setRequestHandler(CallToolRequestSchema, async (request) => {
      const tool = TOOLS.find((t) => t.name === request.params.name);
      // An unknown tool is a protocol error (JSON-RPC -32602), as the MCP spec asks.
      if (!tool) throw new McpError(RpcErrorCode.InvalidParams, `Unknown tool ${request.params.name}.`);
      return this.call(auth, tool.name, request.params.arguments ?? {});
    });
    // JSON responses rather than SSE: every tool answers once, nothing is streamed.
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    await server.connect(transport);
    // Taken over only now: an error before this point is still answered as a problem.
    const res = takeOverResponse(reply);
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await transport.handleRequest(req.raw, res, req.body);
  }

  /** Runs one tool; never throws: any error becomes an `isError` result carrying the problem. */
  async call(auth: AuthContext, name: ToolName, args: Record<string, unknown>): Promise<CallToolResult> {
    try {
      const result = await this.run(auth, name, args);
      return { content: [{ type: 'text', text: JSON.stringify(result) }], structuredContent: result };
    } catch (err) {
      const problem = this.toProblemBody(err);
      return { isError: true, content: [{ type: 'text', text: JSON.stringify(problem) }], structuredContent: problem };
    }
  }

  private async run(auth: AuthContext, name: ToolName, args: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.authorize(auth, name);
    switch (name) {
      case 'create-refund': {
        const { idempotency_key: key, ...body } = args;
        // As RequireIdempotencyKey: the missing key is reported before anything else.
        if (key === undefined || key === '') {
          throw new Problem('idempotency_key_required', 'Send an idempotency_key argument (1-255 printable characters).');
        }
        if (typeof key !== 'string' || !IDEMPOTENCY_KEY_RE.test(key)) {
          throw Problem.validation([{ field: 'idempotency_key', message: 'must be 1-255 printable ASCII characters' }]);
        }
        this.parse(CREATE_REFUND_INPUT, args);
        const dto = await this.validate(CreateRefundDto, 'body', body);
        // As RefundsController.create (after the key and the body, as there): refunds are made
        // with a merchant identity, which admin keys do not have.
        if (auth.role !== 'merchant') throw new Problem('forbidden', 'Refunds are created with a merchant key.');
        // `body` is what REST hashes too (the parsed JSON body), so the same key and the same
        // fields are the same request through either door.
        const { refund, replayed } = await this.refunds.create(auth, key, dto, body);
        return { refund, replayed };
      }
      case 'get-refund': {
        const { id } = this.parse(GET_REFUND_INPUT, args);
        return { ...toRefundJson(await this.refunds.get(auth, await this.refundId(id))) };
      }
      case 'list-refunds': {
        const { stuck, review, ...rest } = this.parse(LIST_REFUNDS_INPUT, args);
        const query = await this.validate(ListRefundsQuery, 'query', {
          ...rest,
          ...(stuck !== undefined ? { stuck: String(stuck) } : {}),
          ...(review !== undefined ? { review: String(review) } : {}),
        });
        return { ...(await this.refunds.list(auth, query)) };
      }
      case 'retry-refund': {
        const { id, ...body } = this.parse(RETRY_REFUND_INPUT, args);
        const dto = await this.validate(OpsActionDto, 'body', body);
        return { ...(await this.actions.retry(auth, await this.refundId(id), dto.comment)) };
      }
      case 'cancel-refund': {
        const { id } = this.parse(CANCEL_REFUND_INPUT, args);
        return { ...(await this.actions.cancel(auth, await this.refundId(id))) };
      }
    }
  }

  /** The role rule of ApiKeyGuard applied to the mirrored REST route's @Roles. */
  private authorize(auth: AuthContext, name: ToolName): void {
    const roles = this.reflector.getAllAndOverride<ApiRole[] | undefined>(ROLES_KEY, [REST_HANDLER[name], RefundsController]) ?? [];
    if (auth.role !== 'admin' && !roles.includes(auth.role)) {
      throw new Problem('forbidden', `Role ${auth.role} may not call ${name}.`);
    }
  }

  private parse<S extends z.ZodObject>(schema: S, args: unknown): z.infer<S> {
    const result = schema.safeParse(args);
    if (!result.success) throw Problem.validation(fieldErrors(result.error));
    return result.data;
  }

  private async validate<T>(metatype: new () => T, type: 'body' | 'query', value: unknown): Promise<T> {
    return (await this.pipe.transform(value, { type, metatype, data: undefined })) as T;
  }

  /** As the REST routes' ParseUUIDPipe: an id that is not a UUID is simply not found. */
  private async refundId(id: string): Promise<string> {
    return (await new ParseUUIDPipe({ exceptionFactory: () => new Problem('not_found', 'No such refund.') }).transform(id, {
      type: 'param',
      data: 'id',
    })) as string;
  }

  /** The body ProblemFilter would send for `err` on REST (same mapping, same logging). */
  private toProblemBody(err: unknown): Record<string, unknown> {
    return this.problems.problemBody(err, 'POST', MCP_PATH);
  }
}
