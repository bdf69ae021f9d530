import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

/**
 * Takes the response over from Fastify, for code that writes to the node response itself
 * (the CSV stream, the MCP transport), and carries over the headers already set on the
 * reply (X-Request-Id, RateLimit-*), which Fastify would otherwise only send with its own
 * answer.
 */
export function takeOverResponse(reply: FastifyReply): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined && !res.headersSent) res.setHeader(name, value);
  }
  return res;
}
