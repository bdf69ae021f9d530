import { HttpException } from '@nestjs/common';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** What went wrong with a request before any route handler ran. */
export type BodyErrorKind = 'too_large' | 'unreadable';

/** A body the service's parsers refused (not JSON, not an object or array). */
export class BodyError extends Error {
  constructor(
    readonly kind: BodyErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

/**
 * The kind of body error `err` is, or undefined when it is something else: ours (BodyError,
 * from the parsers in src/app.ts, which replace Fastify's JSON parser) or Fastify's own,
 * raised while reading the body (too large, a Content-Length that does not match).
 */
export function bodyErrorKind(err: unknown): BodyErrorKind | undefined {
  if (err instanceof BodyError) return err.kind;
  // Nest's error handler hands Fastify's own errors on wrapped in an HttpException.
  const cause = err instanceof HttpException && err.cause !== undefined ? err.cause : err;
  const code = (cause as { code?: unknown } | null)?.code;
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return 'too_large';
  return code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH' ? 'unreadable' : undefined;
}

/** Why a request reached the error path without a handler's own answer. */
export type UnhandledRequest = { kind: BodyErrorKind } | { kind: 'no_route' };

/**
 * Answers, in some other protocol's format, a request under its prefix that failed before any
 * handler ran; returns false to leave it to the service's problem+json answer.
 */
export type UnhandledResponder = (why: UnhandledRequest, req: FastifyRequest, reply: FastifyReply) => boolean;

// Keyed by the node server, which every encapsulated Fastify context of one app shares.
const responders = new WeakMap<object, UnhandledResponder[]>();

/**
 * Registers a responder for one application (keyed by its Fastify instance, so apps built
 * side by side in one test process do not see each other's). The provider emulators use it:
 * a provider answers a malformed body or an unknown path in its own format, not ours.
 */
export function addUnhandledResponder(instance: FastifyInstance, responder: UnhandledResponder): void {
  const list = responders.get(instance.server) ?? [];
  list.push(responder);
  responders.set(instance.server, list);
}

/** Lets the application's responders answer; true when one did. */
export function respondToUnhandled(why: UnhandledRequest, req: FastifyRequest, reply: FastifyReply): boolean {
  const list = responders.get(req.server.server);
  return list !== undefined && list.some((respond) => respond(why, req, reply));
}
