import { All, Controller, Get, Injectable, Logger, Post, Put, Req, Res } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { signCoboResponse } from '../../providers/cobo/cobo.signing.js';
import { SandboxCredentials } from '../sandbox-credentials.js';
import { chance } from '../sandbox-faults.js';
import { SandboxControlError, SandboxFaultsController, control, sendJsonText, serveEmulatorCall, type SandboxRequest } from '../sandbox-http.js';
import { CoboEmulator } from './cobo.emulator.js';
import { CoboFaults } from './cobo.faults.js';
import {
  CoboCode,
  CoboError,
  checkCoboAuth,
  errorBody,
  parseCoboBody,
  parseCreateRefund,
  parseListRefunds,
  parseUpdateRefund,
} from './cobo.rules.js';

/** Where the emulated API is mounted; the signed path is the full pathname, prefix included. */
export const COBO_API_PREFIX = '/sandbox/cobo/v2/';
/** The routes of the emulated API, to tell "wrong method" (2002) from "no such path" (2021). */
const KNOWN_ROUTES: ReadonlyArray<{ method: string; path: RegExp }> = [
  { method: 'GET', path: /^payments\/orders\/[^/]+$/ },
  { method: 'POST', path: /^payments\/refunds$/ },
  { method: 'GET', path: /^payments\/refunds$/ },
  { method: 'GET', path: /^payments\/refunds\/[^/]+$/ },
  { method: 'PUT', path: /^payments\/refunds\/[^/]+$/ },
  { method: 'PUT', path: /^payments\/refunds\/[^/]+\/cancel$/ },
];

export interface CoboCall {
  /** The body as a JSON object (an empty body is `{}`); throws CoboError 2006 when malformed. */
  json(): Record<string, unknown>;
  query: URLSearchParams;
  faults: CoboFaults;
  /** The Refund's `initiator`: `api_key_<the caller's key>`. */
  initiator: string;
}

type CoboWork = (call: CoboCall) => Promise<{ status?: number; body: unknown }>;

/** The raw query string as received, without '?', and the pathname as received (undecoded). */
function splitUrl(originalUrl: string): { path: string; query: string } {
  const cut = originalUrl.indexOf('?');
  return cut < 0 ? { path: originalUrl, query: '' } : { path: originalUrl.slice(0, cut), query: originalUrl.slice(cut + 1) };
}

/**
 * The exact request body: the service's body parsers keep the bytes of every content type
 * as rawBody (src/app.ts), within the body limit; a request without a body has none.
 */
function readRawBody(req: RawBodyRequest<SandboxRequest>): string {
  return Buffer.isBuffer(req.rawBody) ? req.rawBody.toString('utf8') : '';
}

/**
 * The transport of the emulated API: faults, authentication over the raw request, and
 * answers signed like Cobo's (Biz-Timestamp, Biz-Resp-Signature over the exact body bytes)
 * whatever happens. A provider (not just controller code) so SandboxBodyErrors can answer
 * through it when the body parsers rejected the body before any route ran.
 */
@Injectable()
export class CoboApiHttp {
  private readonly logger = new Logger('CoboSandbox');

  constructor(
    private readonly emulator: CoboEmulator,
    private readonly credentials: SandboxCredentials,
  ) {}

  handle(req: RawBodyRequest<SandboxRequest>, res: FastifyReply, work: CoboWork): Promise<void> {
    // Taken before any injected latency: the nonce window is about when the request came in.
    const arrivedAt = Date.now();
    return serveEmulatorCall<CoboFaults>(req, res, {
      faults: () => this.emulator.faults(),
      refusal: (faults) => {
        if (chance(faults.errorRate)) {
          return { fault: 'server_error', status: 500, text: errorBody(CoboCode.INTERNAL, 'Sandbox: injected server error.') };
        }
        if (chance(faults.rateLimitRate)) {
          return {
            fault: 'rate_limited',
            status: 429,
            text: errorBody(CoboCode.TOO_MANY_REQUESTS, 'Sandbox: injected rate limit, too many requests.'),
            headers: { 'Retry-After': String(faults.rateLimitRetryAfterSeconds) },
          };
        }
        return undefined;
      },
      work: async (faults) => {
        const raw = readRawBody(req);
        const { path, query } = splitUrl(req.url);
        const keys = await this.credentials.coboEmulator();
        const authFailure = checkCoboAuth({
          method: req.method,
          path,
          query,
          body: raw,
          headers: req.headers,
          now: arrivedAt,
          windowMs: faults.nonceWindowMs,
          registeredKey: keys.apiPublicKey,
        });
        if (authFailure) throw authFailure;
        const result = await work({
          json: () => parseCoboBody(raw),
          query: new URLSearchParams(query),
          faults,
          initiator: `api_key_${keys.apiPublicKey}`,
        });
        return { status: result.status ?? 200, text: JSON.stringify(result.body) };
      },
      failure: (err) => {
        if (err instanceof CoboError) return { status: err.httpStatus, text: errorBody(err.code, err.message) };
        this.logger.error(`API call failed: ${(err as Error)?.stack ?? String(err)}`);
        return { status: 500, text: errorBody(CoboCode.INTERNAL, 'Internal error, please retry later.') };
      },
      send: ({ status, text, headers }, faults) => this.send(res, status, text, faults, headers),
      injected: (kind) => this.emulator.countInjection(kind),
    });
  }

  /** A body the parsers refused: authenticate as usual (rawBody was kept), then 2006. */
  handleUnparsableBody(req: RawBodyRequest<SandboxRequest>, res: FastifyReply): Promise<void> {
    return this.handle(req, res, async () => {
      throw new CoboError(400, CoboCode.BAD_PARAMETER, 'Malformed JSON request body.');
    });
  }

  /** A body over the service's limit was never read, so it cannot be authenticated: a signed 400. */
  async handleTooLarge(res: FastifyReply): Promise<void> {
    const faults = await this.emulator.faults().catch(() => undefined);
    await this.send(res, 400, errorBody(CoboCode.BAD_PARAMETER, 'Request body too large.'), faults);
  }

  /**
   * Sends `text` byte for byte, signed over exactly those bytes unless a fault says otherwise.
   * A 429 goes out unsigned: rate limiting is the gateway's answer, which Cobo's Python SDK
   * accepts without Biz-Resp-Signature (providers.md §2.4).
   */
  private async send(
    res: FastifyReply,
    status: number,
    text: string,
    faults: CoboFaults | undefined,
    headers: Record<string, string> = {},
  ): Promise<void> {
    for (const [name, value] of Object.entries(headers)) res.header(name, value);
    const unsigned = status === 429 || (faults !== undefined && chance(faults.unsignedResponseRate));
    if (unsigned && status !== 429) this.emulator.countInjection('unsigned_response');
    if (!unsigned) {
      try {
        const keys = await this.credentials.coboEmulator();
        const timestamp = String(Date.now());
        // A wrong signature: valid hex of the right length, over other bytes.
        const badlySigned = faults !== undefined && chance(faults.badSignatureRate);
        if (badlySigned) this.emulator.countInjection('bad_signature');
        const signed = badlySigned ? `${text} ` : text;
        res.header('Biz-Timestamp', timestamp);
        res.header('Biz-Resp-Signature', signCoboResponse(keys.emulatorSeed, signed, timestamp));
      } catch (err) {
        // Without the keys (database down) the answer goes out unsigned, as a real outage might.
        this.logger.error(`cannot sign the response: ${(err as Error).message}`);
      }
    }
    sendJsonText(res, status, text);
  }
}

/** `/sandbox/cobo`: the Cobo Payments API under `/v2`, plus fault settings and inspection for tests. */
@Controller('sandbox/cobo')
export class CoboEmulatorController extends SandboxFaultsController {
  constructor(
    private readonly http: CoboApiHttp,
    private readonly emulator: CoboEmulator,
  ) {
    super(new Logger('CoboSandbox'), emulator);
  }

  // --- the API (bodies taken from the raw request, so the global ValidationPipe stays out) ---

  @Get('v2/payments/orders/:orderId')
  getOrder(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, async () => ({ body: await this.emulator.getOrder(String(req.params.orderId)) }));
  }

  @Post('v2/payments/refunds')
  createRefund(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, (call) =>
      this.emulator.createRefund(parseCreateRefund(call.json()), call.faults, call.initiator),
    );
  }

  @Get('v2/payments/refunds')
  listRefunds(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, async (call) => ({
      body: await this.emulator.listRefunds(parseListRefunds(call.query), call.faults),
    }));
  }

  @Get('v2/payments/refunds/:refundId')
  getRefund(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, async (call) => ({
      body: await this.emulator.getRefund(String(req.params.refundId), call.faults),
    }));
  }

  @Put('v2/payments/refunds/:refundId/cancel')
  cancelRefund(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, async (call) => ({
      body: await this.emulator.cancelRefund(String(req.params.refundId), call.faults),
    }));
  }

  @Put('v2/payments/refunds/:refundId')
  updateRefund(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, async (call) => {
      const { toAddress } = parseUpdateRefund(call.json());
      return { body: await this.emulator.updateRefund(String(req.params.refundId), toAddress, call.faults) };
    });
  }

  /** Anything else under /v2: authenticated like any call, then 2002 (wrong method) or 2021. */
  @All('v2/*')
  unknownRoute(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, async () => {
      const path = splitUrl(req.url).path.slice(COBO_API_PREFIX.length);
      if (KNOWN_ROUTES.some((r) => r.path.test(path))) {
        throw new CoboError(405, CoboCode.UNSUPPORTED_METHOD, `Method ${req.method} is not supported here.`);
      }
      throw new CoboError(404, CoboCode.MISSING_HANDLER, `No handler for ${req.method} ${splitUrl(req.url).path}.`);
    });
  }

  // --- inspection of the emulator's own records ---------------------------------------------

  @Get('refunds')
  listRecords(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    const orderId = typeof req.query.order_id === 'string' ? req.query.order_id : undefined;
    return control(res, this.logger, async () => ({ body: { data: await this.emulator.inspectRefunds(orderId) } }));
  }

  @Get('webhooks')
  listWebhooks(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    const orderId = typeof req.query.order_id === 'string' ? req.query.order_id : undefined;
    const refundId = typeof req.query.refund_id === 'string' ? req.query.refund_id : undefined;
    return control(res, this.logger, async () => ({
      body: { data: await this.emulator.inspectWebhooks({ orderId, refundId }) },
    }));
  }

  @Get('orders/:orderId')
  inspectOrder(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const order = await this.emulator.inspectOrder(String(req.params.orderId));
      if (!order) throw new SandboxControlError(404, 'order not found');
      return { body: order };
    });
  }
}
