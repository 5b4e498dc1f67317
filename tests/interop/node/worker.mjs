// A Node.js BullMQ worker for the interop tests: `node worker.mjs [json options]`.
// Options: {concurrency, name, limiter: {max, duration}}. Handlers by job name:
//   echo   -> {echo: data, attempt, by: "node"}
//   flaky  -> throws until attempt == data.succeed_on, then {attempt, by: "node"}
//   fail   -> always throws
// Prints one JSON line per event (ready, started, completed, failed, error, closed) and stops
// cleanly on SIGTERM or when stdin closes (the test process went away).
import { Worker } from 'bullmq';
import { disconnect, emit, target } from './lib.mjs';

const options = process.argv[2] ? JSON.parse(process.argv[2]) : {};
const { connection, prefix, queue } = target();

const handlers = {
  echo: async (job, attempt) => ({ echo: job.data, attempt, by: 'node' }),
  flaky: async (job, attempt) => {
    if (attempt < job.data.succeed_on) {
      throw new Error(`node flaky attempt ${attempt}`);
    }
    return { attempt, by: 'node' };
  },
  fail: async (job, attempt) => {
    throw new Error(`node failure on attempt ${attempt}`);
  },
};

const worker = new Worker(
  queue,
  async (job) => {
    const attempt = job.attemptsMade + 1;
    emit({ event: 'started', id: job.id, name: job.name, attempt, at: Date.now() });
    const handler = handlers[job.name];
    if (!handler) {
      throw new Error(`no handler for ${job.name}`);
    }
    return handler(job, attempt);
  },
  {
    connection,
    prefix,
    concurrency: options.concurrency ?? 1,
    name: options.name ?? `node-${process.pid}`,
    ...(options.limiter ? { limiter: options.limiter } : {}),
  },
);

worker.on('completed', (job, returnvalue) => {
  emit({ event: 'completed', id: job.id, returnvalue: returnvalue ?? null });
});
worker.on('failed', (job, error) => {
  emit({ event: 'failed', id: job?.id, attemptsMade: job?.attemptsMade, reason: error.message });
});
worker.on('error', (error) => emit({ event: 'error', message: String(error) }));

let closing = false;
async function shutdown() {
  if (closing) {
    return;
  }
  closing = true;
  await worker.close();
  await disconnect();
  emit({ event: 'closed' });
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.stdin.on('end', shutdown);
process.stdin.resume();

await worker.waitUntilReady();
emit({ event: 'ready' });
