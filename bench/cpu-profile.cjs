// Loaded into service processes by `npm run bench` with BENCH_CPU_PROF=1 (NODE_OPTIONS=--require).
// SIGWINCH (not SIGUSR2: Nest's shutdown hooks listen to it) starts the V8 sampling profiler; the next stops it and writes
// <BENCH_CPU_PROF_DIR>/<BENCH_PROCESS_NAME>-<label>.cpuprofile (label from the file
// <BENCH_CPU_PROF_DIR>/label, written by the bench before it signals). Open the file in
// Chrome DevTools (Performance) or summarise it with dist/bench/bench/profile-summary.js.
// The same thing as `node --cpu-prof`, but for one phase of a long-running process.
'use strict';
const inspector = require('node:inspector');
const fs = require('node:fs');
const path = require('node:path');

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  let running = false;
  process.on('SIGWINCH', () => {
    if (!running) {
      running = true;
      session.post('Profiler.enable', () =>
        session.post('Profiler.setSamplingInterval', { interval: 500 }, () => session.post('Profiler.start')),
      );
      return;
    }
    running = false;
    session.post('Profiler.stop', (err, result) => {
      if (err) return;
      let label = 'phase';
      try {
        label = fs.readFileSync(path.join(dir, 'label'), 'utf8').trim() || label;
      } catch {
        // no label file
      }
      const name = `${process.env.BENCH_PROCESS_NAME || process.pid}-${label}.cpuprofile`;
      fs.writeFileSync(path.join(dir, name), JSON.stringify(result.profile));
      fs.writeFileSync(path.join(dir, `${process.env.BENCH_PROCESS_NAME || process.pid}-${label}.done`), '');
    });
  });
}
