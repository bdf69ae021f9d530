import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AppConfig } from '../src/config/config.js';
import { Database } from '../src/database/database.js';
import { queuePrefix, refundQueueName } from '../src/processing/queues.js';
import { RecoverySweeper } from '../src/processing/recovery-sweeper.js';
import { MAX_UNAWAITED_HANDOFFS, RefundQueueService } from '../src/processing/refund-queue.service.js';
import { metricSum, scrapeMetrics } from './support/metrics.js';
import { dropTestDatabase } from './support/database.js';
import { deleteRedisPrefix, merchantKey, REDIS_URL, sandboxPayment, startService, TestService, waitFor } from './support/service.js';

// A create is answered once its row is committed; the job's add to Redis runs on after the
// answer (RefundQueueService.handOff). ROLE=api: no worker takes the jobs, and no sweeper
// runs by itself, so each test sees exactly what the create left in Redis.
let svc: TestService;
let key: string;
let queues: RefundQueueService;

beforeAll(async () => {
  svc = await startService('handoff', { ROLE: 'api' });
  key = await merchantKey(svc, 'M1001');
  queues = svc.app.get(RefundQueueService);
});

afterAll(async () => {
  vi.restoreAllMocks();
  await svc?.stop();
});

function createRefund(paymentId: string, amount: string) {
  return svc
    .http()
    .post('/v1/refunds')
    .set('Authorization', `Bearer ${key}`)
    .set('Idempotency-Key', randomUUID())
    .send({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' });
}

/** Holds every addBulk of the binance_pay queue until release() (each then runs for real). */
function holdAdds(queue: Queue) {
  const original = queue.addBulk.bind(queue);
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let held = 0;
  const spy = vi.spyOn(queue, 'addBulk').mockImplementation(async (jobs) => {
    held++;
    await released;
    return original(jobs);
  });
  return {
    get held() {
      return held;
    },
    release: () => {
      release();
      spy.mockRestore();
    },
  };
}

const enqueueStages = async () =>
  metricSum(await scrapeMetrics(svc.http), 'refund_create_stage_duration_seconds_count', { stage: 'enqueue' });

describe('the hand-off of a created refund to the queue', () => {
  it('answers 202 before the job reaches Redis; the job follows, and the stage is observed then', async () => {
    const queue = queues.queue('binance_pay');
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    // A first create on the payment (the locked path), so the one under test is an ordinary one.
    await createRefund(paymentId, '1').expect(202);
    await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'first hand-off settled');
    const stagesBefore = await enqueueStages();

    const hold = holdAdds(queue);
    let id: string;
    try {
      const res = await createRefund(paymentId, '2').expect(202);
      id = res.body.id;
      expect(res.body.status).toBe('queued');
      // Answered with the add still held: the row is the record, the job not there yet.
      expect(hold.held).toBe(1);
      expect(queues.handOffsInFlight).toBe(1);
      expect(await queue.getJob(id)).toBeUndefined();
      const { rows } = await svc.db.query(`SELECT status FROM refunds WHERE id = $1`, [id]);
      expect(rows[0].status).toBe('queued');
      expect(await enqueueStages()).toBe(stagesBefore);
    } finally {
      hold.release();
    }
    await waitFor(async () => (await queue.getJob(id!)) ?? undefined, 5_000, 'the job added');
    await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'the hand-off settled');
    await waitFor(async () => (await enqueueStages()) === stagesBefore + 1 || undefined, 5_000, 'the enqueue stage observed');
  });

  it('starts the add on a later turn of the event loop, so the answer is written first', async () => {
    const queue = queues.queue('binance_pay');
    const hold = holdAdds(queue);
    const refundId = randomUUID();
    try {
      await queues.handOff('binance_pay', refundId);
      // Back in the caller within the same turn: nothing sent to Redis yet.
      expect(hold.held).toBe(0);
      await waitFor(async () => hold.held === 1 || undefined, 1_000, 'the add started');
    } finally {
      hold.release();
    }
    await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'the hand-off settled');
    await queue.remove(refundId);
  });

  it('a hand-off Redis refuses leaves the create answered and the refund to the sweeper', async () => {
    const queue = queues.queue('binance_pay');
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    await createRefund(paymentId, '1').expect(202);
    await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'first hand-off settled');

    const stagesBefore = await enqueueStages();
    const spy = vi.spyOn(queue, 'addBulk').mockRejectedValue(new Error('Connection is closed.'));
    let id: string;
    try {
      id = (await createRefund(paymentId, '2').expect(202)).body.id;
      await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'the hand-off given up');
    } finally {
      spy.mockRestore();
    }
    expect(await queue.getJob(id)).toBeUndefined();
    // A failed add is not a hand-off's time.
    expect(await enqueueStages()).toBe(stagesBefore);
    // The sweeper takes refunds overdue by its grace period: make this one overdue, and sweep
    // the way a worker process's sweeper would.
    await svc.db.query(`UPDATE refunds SET next_check_at = now() - interval '1 hour' WHERE id = $1`, [id]);
    const sweeper = new RecoverySweeper(svc.app.get(Database), queues, svc.app.get(AppConfig));
    expect(await sweeper.sweep()).toBeGreaterThanOrEqual(1);
    expect((await queue.getJob(id))?.data).toEqual({ refundId: id });
  });

  it('past the limit of hand-offs on their way, a create waits for its own', async () => {
    expect(queues.maxUnawaitedHandOffs).toBe(MAX_UNAWAITED_HANDOFFS);
    const queue = queues.queue('binance_pay');
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    await createRefund(paymentId, '1').expect(202);
    await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'first hand-off settled');

    // A small limit, so the test needs few held adds (each gives up after 2 s: release well before).
    const limit = 3;
    queues.maxUnawaitedHandOffs = limit;
    const hold = holdAdds(queue);
    // Jobs for ids with no row: nothing processes them here (no worker), and they are removed below.
    const fillers = Array.from({ length: limit }, () => randomUUID());
    let answered = false;
    let pending: Promise<{ status: number; body: { id: string } }> | undefined;
    try {
      await Promise.all(fillers.map((refundId) => queues.handOff('binance_pay', refundId)));
      expect(queues.handOffsInFlight).toBe(limit);
      pending = createRefund(paymentId, '2').then((res) => {
        answered = true;
        return res;
      });
      // The create's row is committed, and then it waits behind the held adds.
      await waitFor(async () => queues.handOffsInFlight === limit + 1 || undefined, 1_500, 'the create at its hand-off');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(answered).toBe(false);
    } finally {
      hold.release();
      queues.maxUnawaitedHandOffs = MAX_UNAWAITED_HANDOFFS;
    }
    const res = await pending!;
    expect(res.status).toBe(202);
    // Answered once its own add was done.
    expect(await queue.getJob(res.body.id)).toBeDefined();
    await waitFor(async () => queues.handOffsInFlight === 0 || undefined, 5_000, 'all hand-offs settled');
    await Promise.all(fillers.map((refundId) => queue.remove(refundId)));
  });

  it('a shutdown lets the hand-offs on their way reach Redis before closing the connection, and later creates wait for theirs', async () => {
    const own = await startService('handoffstop', { ROLE: 'api' });
    let closed = false;
    const prefix = own.queuePrefix;
    try {
      const ownQueues = own.app.get(RefundQueueService);
      const hold = holdAdds(ownQueues.queue('binance_pay'));
      const refundId = randomUUID();
      let closing: Promise<unknown> | undefined;
      let late: Promise<unknown> | undefined;
      try {
        await ownQueues.handOff('binance_pay', refundId);
        expect(ownQueues.handOffsInFlight).toBe(1);
        closing = own.app.close().then(() => (closed = true));
        await new Promise((resolve) => setTimeout(resolve, 50));
        // A create that reaches its hand-off while the shutdown drains waits for its own add.
        let lateDone = false;
        late = ownQueues.handOff('binance_pay', randomUUID()).then(() => (lateDone = true));
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(closed).toBe(false);
        expect(lateDone).toBe(false);
      } finally {
        hold.release();
      }
      await closing;
      // Its add raced the connection's close; either way the hand-off settled.
      await late;
      const name = refundQueueName('binance_pay');
      const check = new Queue(name, { prefix: queuePrefix(own.app.get(AppConfig), name), connection: { url: REDIS_URL } });
      try {
        expect((await check.getJob(refundId))?.data).toEqual({ refundId });
      } finally {
        await check.close();
      }
    } finally {
      if (!closed) await own.app.close();
      await own.db.end();
      // own.stop() would close the app a second time.
      await dropTestDatabase(own.databaseUrl);
      await deleteRedisPrefix(prefix);
    }
  });
});
