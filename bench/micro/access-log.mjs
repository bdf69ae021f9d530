// Micro-benchmark (docs/performance.md, findings 31 and 34): CPU per request of the access log
// as the service writes it — pino with the service's own logger options (httpLoggerOptions()
// from a build: `npx nest build` first), a child logger per request (pino-http's), the line at
// the end — against no redaction, wildcard redaction paths only, and the role in a second
// child per request (pino-http's customProps, as until round 11).
// 100,000 lines to /dev/null per variant, three rounds. Run from the repository root:
//   node bench/micro/access-log.mjs
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import 'reflect-metadata';

const require = createRequire(path.resolve('package.json'));
const pino = require('pino');
const built = ['dist/src/app.module.js', 'dist/bench/src/app.module.js'].map((p) => path.resolve(p)).find((p) => fs.existsSync(p));
if (!built) {
  process.stderr.write('no build of the service: run `npx nest build` first\n');
  process.exit(2);
}
const { httpLoggerOptions } = await import(pathToFileURL(built).href);
const service = httpLoggerOptions({ logLevel: 'info', role: 'api' });
const { base, redact } = service;
const serializers = { ...service.serializers, res: pino.stdSerializers.res };
const { role: _role, ...baseWithoutRole } = base;

const variants = {
  'service (role in base)': { opts: { base, redact }, roleChild: false },
  'service, role child': { opts: { base: baseWithoutRole, redact }, roleChild: true },
  'no redaction': { opts: { base }, roleChild: false },
  'wildcard paths only': { opts: { base, redact: { ...redact, paths: redact.paths.filter((p) => p.startsWith('*')) } }, roleChild: false },
};
const dest = pino.destination({ dest: '/dev/null', sync: true });
const N = 100_000;
for (const round of [1, 2, 3]) {
  for (const [name, { opts, roleChild }] of Object.entries(variants)) {
    const logger = pino({ ...opts, serializers }, dest);
    const res = { statusCode: 202, getHeaders: () => ({ 'x-request-id': 'abc', 'content-type': 'application/json', 'ratelimit-limit': '100' }), headersSent: true };
    const started = process.cpuUsage();
    for (let i = 0; i < N; i++) {
      let child = logger.child({ req: { id: `r${i}`, method: 'POST', url: '/v1/refunds', headers: { authorization: 'x' } } });
      if (roleChild) child = child.child({ role: 'api' });
      child.info({ res, responseTime: 12 }, 'request completed');
    }
    const used = process.cpuUsage(started);
    console.log(`round ${round} ${name.padEnd(24)} ${((used.user + used.system) / N).toFixed(1)} us of CPU per request`);
  }
}
