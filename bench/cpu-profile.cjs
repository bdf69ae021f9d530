// Loaded into service processes by `npm run bench` with BENCH_CPU_PROF=1 or BENCH_HEAP_PROF=1
// (named for CPU profiles, its first use; BENCH_CPU_PROF_DIR holds heap profiles too)
// (NODE_OPTIONS=--require). SIGWINCH (not SIGUSR2: Nest's shutdown hooks listen to it) starts
// the profiler; the next stops it and writes <BENCH_CPU_PROF_DIR>/<BENCH_PROCESS_NAME>-<label>
// .cpuprofile, or .heapprofile with BENCH_PROF_KIND=heap (label from the file
// <BENCH_CPU_PROF_DIR>/label, written by the bench before it signals). Open the file in
// Chrome DevTools or summarise it with dist/bench/bench/profile-summary.js.
// CPU: the same thing as `node --cpu-prof`, but for one phase of a long-running process.
// Heap: V8's sampling heap profiler with the objects the GC already collected kept in the
// samples, so it shows where the garbage is allocated (what `--heap-prof` cannot: it keeps
// only what is still alive when it stops), one sample per ~16 kB allocated.
'use strict';
const inspector = require('node:inspector');
const fs = require('node:fs');
const path = require('node:path');

const dir = process.env.BENCH_CPU_PROF_DIR;
const heap = process.env.BENCH_PROF_KIND === 'heap';
if (dir) {
  const session = new inspector.Session();
  session.connect();
  let running = false;
  const write = (label, ext, profile) => {
    const name = `${process.env.BENCH_PROCESS_NAME || process.pid}-${label}`;
    fs.writeFileSync(path.join(dir, `${name}.${ext}`), JSON.stringify(profile));
    fs.writeFileSync(path.join(dir, `${name}.done`), '');
  };
  process.on('SIGWINCH', () => {
    if (!running) {
      running = true;
      if (heap) {
        session.post('HeapProfiler.enable', () =>
          session.post('HeapProfiler.startSampling', {
            samplingInterval: 16384,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: true,
          }),
        );
      } else {
        session.post('Profiler.enable', () =>
          session.post('Profiler.setSamplingInterval', { interval: 500 }, () => session.post('Profiler.start')),
        );
      }
      return;
    }
    running = false;
    let label = 'phase';
    try {
      label = fs.readFileSync(path.join(dir, 'label'), 'utf8').trim() || label;
    } catch {
      // no label file
    }
    if (heap) {
      session.post('HeapProfiler.stopSampling', (err, result) => {
        if (!err) write(label, 'heapprofile', result.profile);
      });
    } else {
      session.post('Profiler.stop', (err, result) => {
        if (!err) write(label, 'cpuprofile', result.profile);
      });
    }
  });
}
