// Micro-benchmark (docs/performance.md, finding 57): how long a busy Node process takes to
// accept a burst of new connections. A child process listens on 127.0.0.1 and keeps its event
// loop busy with turns of a fixed length (a stand-in for a process saturated by other work);
// the parent opens a burst of connections at once and reports how long the child took from
// the first accept to the last. libuv accepts one connection per turn of the loop since 1.45
// (Node 20; libuv pull request 3696), so the last of a burst of N waits about N turns.
// Bounded: four turn lengths, 100 connections each, a few seconds per case. Run:
//   node bench/micro/accept-burst.mjs
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const CONNECTIONS = 100;
const TURNS_MS = [0, 5, 20, 50];

if (process.argv[2] === 'listener') {
  const turnMs = Number(process.argv[3]);
  let accepted = 0;
  let first = 0;
  let last = 0;
  const server = net.createServer((socket) => {
    accepted++;
    last = Date.now();
    first ||= last;
    socket.destroy();
  });
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
  // The busy loop: one setImmediate callback per turn, each holding the thread turnMs.
  const turn = () => {
    const until = Date.now() + turnMs;
    while (Date.now() < until);
    setImmediate(turn);
  };
  if (turnMs > 0) setImmediate(turn);
  process.on('message', () => process.send({ accepted, spanMs: last - first }));
  // The parent gone (killed, crashed): stop spinning.
  process.on('disconnect', () => process.exit(0));
} else {
  const self = fileURLToPath(import.meta.url);
  console.log(`${CONNECTIONS} connections opened at once to a process whose event loop turns take:`);
  for (const turnMs of TURNS_MS) {
    const child = fork(self, ['listener', String(turnMs)]);
    const { port } = await new Promise((resolve) => child.once('message', resolve));
    const sockets = Array.from({ length: CONNECTIONS }, () => net.connect(port, '127.0.0.1').on('error', () => undefined));
    // Long enough for every accept at one per turn, plus a margin.
    const deadline = Date.now() + CONNECTIONS * turnMs * 1.5 + 2_000;
    let report;
    do {
      await new Promise((resolve) => setTimeout(resolve, 250));
      child.send('report');
      // One turn of the child's loop at most, and then some; a child that does not answer fails the run.
      report = await Promise.race([
        new Promise((resolve) => child.once('message', resolve)),
        new Promise((_, reject) => setTimeout(() => reject(new Error('the listener did not report')), turnMs + 5_000)),
      ]);
    } while (report.accepted < CONNECTIONS && Date.now() < deadline);
    for (const socket of sockets) socket.destroy();
    child.kill();
    const perAccept = report.accepted > 1 ? (report.spanMs / (report.accepted - 1)).toFixed(2) : '-';
    console.log(
      `  ${String(turnMs).padStart(2)} ms: ${report.accepted}/${CONNECTIONS} accepted, first to last ${report.spanMs} ms (${perAccept} ms per accept)`,
    );
  }
}
