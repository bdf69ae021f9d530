// Micro-benchmark (docs/performance.md, findings 31 and 34): CPU per request of the access log
// as the service writes it — pino with the service's redaction paths, a child logger per
// request (pino-http's), the line at the end — against no redaction, wildcard paths only, and
// the role bound once per process instead of in a second child per request.
// 100,000 lines to /dev/null per variant, three rounds. Run from the repository root:
//   node bench/micro/access-log.cjs
'use strict';
const path = require('node:path');
const pino = require(path.resolve('node_modules/pino'));

// The same list as REDACTED_PATHS in src/app.module.ts.
const paths = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["binancepay-signature"]',
  'req.headers["biz-api-signature"]',
  'req.headers["lean-signature"]',
  'res.headers["set-cookie"]',
  '*.secretKey',
  '*.apiKey',
  '*.key',
  '*.password',
  '*.clientSecret',
];
// roleChild: the role as pino-http's customProps (until round 11): a second child logger per
// request; roleBase: the role as a base binding of the process (src/app.module.ts now).
const redact = { paths, censor: '[redacted]' };
const base = { pid: process.pid, hostname: 'host', role: 'api' };
const variants = {
  'no redaction, role child': { opts: {}, roleChild: true },
  'service, role child': { opts: { redact }, roleChild: true },
  'service, role base': { opts: { redact, base }, roleChild: false },
  'wildcards only, role child': { opts: { redact: { paths: paths.filter((p) => p.startsWith('*')), censor: '[redacted]' } }, roleChild: true },
};
const dest = pino.destination({ dest: '/dev/null', sync: true });
const N = 100_000;
for (const round of [1, 2, 3]) {
  for (const [name, { opts, roleChild }] of Object.entries(variants)) {
    const logger = pino({ ...opts, serializers: { req: (r) => ({ id: r.id, method: r.method, url: r.url }), res: pino.stdSerializers.res } }, dest);
    const res = { statusCode: 202, getHeaders: () => ({ 'x-request-id': 'abc', 'content-type': 'application/json', 'ratelimit-limit': '100' }), headersSent: true };
    const started = process.cpuUsage();
    for (let i = 0; i < N; i++) {
      let child = logger.child({ req: { id: `r${i}`, method: 'POST', url: '/v1/refunds', headers: { authorization: 'x' } } });
      if (roleChild) child = child.child({ role: 'api' });
      child.info({ res, responseTime: 12 }, 'request completed');
    }
    const used = process.cpuUsage(started);
    console.log(`round ${round} ${name.padEnd(27)} ${((used.user + used.system) / N).toFixed(1)} us of CPU per request`);
  }
}
