// Node.js BullMQ producer and inspector.
//
//   node queue.mjs <command> [json]   run one command on $QUEUE, print one JSON result
//   node queue.mjs serve              answer JSON lines on stdin, one JSON line each on stdout:
//                                     {command, arg, queue, prefix} -> {ok: result} | {error}
//                                     (the tests keep one of these per session: importing
//                                     bullmq once is much cheaper than once per call)
// Commands:
//   add      [{name, data, opts}, ...]  Queue.add, one by one      -> {ids}
//   addBulk  [{name, data, opts}, ...]  Queue.addBulk              -> {ids}
//   jobs     [id, ...]                  Queue.getJob + getState    -> {jobs: {id: job|null}}
//   getters  (none)                     the Queue getters a dashboard uses
//   pause    (none)                     Queue.pause                -> {}
//   resume   (none)                     Queue.resume               -> {}
//   retry    [id, ...]                  Job.retry() (what Bull Board's retry runs)  -> {}
//   retryJobs (none)                    Queue.retryJobs (Bull Board's retry-all)    -> {}
//   remove   [id, ...]                  Job.remove()                                -> {}
//   clean    (none)                     Queue.clean(0, 1000, 'failed')      -> {ids}
//   dedupJobId id                       Queue.getDeduplicationJobId         -> {id}
//   limits   (none)                     getGlobalRateLimit/Concurrency, getRateLimitTtl
//   setLimits {rate: {max, duration}|null, concurrency|null}  setGlobal*/removeGlobal* -> {}
//   rateLimit ms                        Queue.rateLimit(ms) (a manual hold)          -> {}
//   upsertScheduler {id, repeat, name, data, opts}  Queue.upsertJobScheduler -> {id}
//   schedulers (none)                   Queue.getJobSchedulers()    -> {schedulers}
//   removeScheduler id                  Queue.removeJobScheduler    -> {removed}
//   cronNext {pattern, tz, from, count} BullMQ's getNextMillis, count times from `from`
//                                       (ms), each from the last   -> {next: [ms, ...]}
import { createInterface } from 'node:readline';
import { getNextMillis } from 'bullmq';
import { disconnect, emit, openQueue, view } from './lib.mjs';

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed', 'paused'];

async function run(queue, command, arg) {
  switch (command) {
    case 'add': {
      const ids = [];
      for (const spec of arg) {
        const job = await queue.add(spec.name, spec.data, spec.opts ?? {});
        ids.push(job.id);
      }
      return { ids };
    }
    case 'addBulk': {
      const jobs = await queue.addBulk(arg);
      return { ids: jobs.map((job) => job.id) };
    }
    case 'jobs': {
      const jobs = {};
      for (const id of arg) {
        jobs[id] = await view(await queue.getJob(id));
      }
      return { jobs };
    }
    case 'getters': {
      const ids = {};
      for (const state of STATES) {
        ids[state] = (await queue.getJobs([state], 0, -1, true)).map((job) => job.id);
      }
      const workers = await queue.getWorkers();
      return {
        counts: await queue.getJobCounts(...STATES),
        ids,
        waitingCount: await queue.getWaitingCount(),
        failedCount: await queue.getFailedCount(),
        completed: await Promise.all((await queue.getCompleted()).map(view)),
        failed: await Promise.all((await queue.getFailed()).map(view)),
        isPaused: await queue.isPaused(),
        workers: workers.map((w) => w.rawname),
      };
    }
    case 'retry': {
      for (const id of arg) {
        await (await queue.getJob(id)).retry('failed');
      }
      return {};
    }
    case 'retryJobs': {
      await queue.retryJobs({ state: 'failed' });
      return {};
    }
    case 'remove': {
      for (const id of arg) {
        await (await queue.getJob(id)).remove();
      }
      return {};
    }
    case 'clean': {
      return { ids: await queue.clean(0, 1000, 'failed') };
    }
    case 'dedupJobId':
      return { id: await queue.getDeduplicationJobId(arg) };
    case 'limits':
      return {
        rate: await queue.getGlobalRateLimit(),
        concurrency: await queue.getGlobalConcurrency(),
        ttl: await queue.getRateLimitTtl(),
      };
    case 'setLimits':
      if (arg.rate) {
        await queue.setGlobalRateLimit(arg.rate.max, arg.rate.duration);
      } else {
        await queue.removeGlobalRateLimit();
      }
      if (arg.concurrency) {
        await queue.setGlobalConcurrency(arg.concurrency);
      } else {
        await queue.removeGlobalConcurrency();
      }
      return {};
    case 'rateLimit':
      await queue.rateLimit(arg);
      return {};
    case 'upsertScheduler': {
      const job = await queue.upsertJobScheduler(arg.id, arg.repeat, {
        name: arg.name,
        data: arg.data,
        opts: arg.opts ?? {},
      });
      return { id: job?.id ?? null };
    }
    case 'schedulers':
      return { schedulers: await queue.getJobSchedulers(0, -1, true) };
    case 'removeScheduler':
      return { removed: await queue.removeJobScheduler(arg) };
    case 'cronNext': {
      const next = [];
      let from = arg.from;
      for (let i = 0; i < arg.count; i++) {
        from = getNextMillis(from, { pattern: arg.pattern, tz: arg.tz });
        next.push(from);
      }
      return { next };
    }
    case 'pause':
      await queue.pause();
      return {};
    case 'resume':
      await queue.resume();
      return {};
    default:
      throw new Error(`unknown command ${command}`);
  }
}

async function serve() {
  const queues = new Map();
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) {
      continue;
    }
    try {
      const request = JSON.parse(line);
      const key = `${request.prefix}\u0000${request.queue}`;
      if (!queues.has(key)) {
        queues.set(key, openQueue({ prefix: request.prefix, queue: request.queue }));
      }
      emit({ ok: await run(queues.get(key), request.command, request.arg) });
    } catch (error) {
      emit({ error: String(error?.stack ?? error) });
    }
  }
  await Promise.all([...queues.values()].map((queue) => queue.close()));
  await disconnect();
}

if (process.argv[2] === 'serve') {
  await serve();
} else {
  const queue = openQueue();
  try {
    const arg = process.argv[3] ? JSON.parse(process.argv[3]) : null;
    emit(await run(queue, process.argv[2], arg));
  } finally {
    await queue.close();
    await disconnect();
  }
}
