import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import type { Problem } from './problem.js';

/** Answers `problem` as application/problem+json, its `instance` being `path`. */
export function replyProblem(reply: FastifyReply, problem: Problem, path: string, headers: Record<string, string> = {}): FastifyReply {
  return reply
    .status(problem.getStatus())
    .headers(headers)
    .type('application/problem+json')
    .send(JSON.stringify(problem.body(path)));
}

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
