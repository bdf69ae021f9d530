// Micro-benchmark (docs/performance.md, finding 31): CPU per request of the access log as the
// service writes it — pino with the service's redaction paths, a child logger per request
// (pino-http's), the line at the end — against no redaction and wildcard paths only.
// 100,000 lines to /dev/null per variant, two rounds. Run from the repository root:
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
const variants = {
  none: {},
  service: { redact: { paths, censor: '[redacted]' } },
  wildcardsOnly: { redact: { paths: paths.filter((p) => p.startsWith('*')), censor: '[redacted]' } },
};
const dest = pino.destination({ dest: '/dev/null', sync: true });
const N = 100_000;
for (const round of [1, 2]) {
  for (const [name, opts] of Object.entries(variants)) {
    const base = pino({ ...opts, serializers: { req: (r) => ({ id: r.id, method: r.method, url: r.url }), res: pino.stdSerializers.res } }, dest);
    const res = { statusCode: 202, getHeaders: () => ({ 'x-request-id': 'abc', 'content-type': 'application/json', 'ratelimit-limit': '100' }), headersSent: true };
    const started = process.cpuUsage();
    for (let i = 0; i < N; i++) {
      const child = base.child({ req: { id: `r${i}`, method: 'POST', url: '/v1/refunds', headers: { authorization: 'x' } } }).child({ role: 'api' });
      child.info({ res, responseTime: 12 }, 'request completed');
    }
    const used = process.cpuUsage(started);
    console.log(`round ${round} ${name.padEnd(14)} ${((used.user + used.system) / N).toFixed(1)} us of CPU per request`);
  }
}
