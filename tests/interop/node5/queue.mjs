// Node.js BullMQ 5 (pinned in this folder's package.json): a producer and a dashboard's pause
// and resume, for the tests of the older layout (BullMQ 5's pause RENAMEs wait to paused and
// its resume RENAMEs it back). The same protocol as ../node/queue.mjs:
//
//   node queue.mjs serve    answer JSON lines on stdin: {command, arg, queue, prefix}
//                           -> {ok: result} | {error}
// Commands:
//   add      [{name, data, opts}, ...]  Queue.add, one by one   -> {ids}
//   pause    (none)                     Queue.pause             -> {}
//   resume   (none)                     Queue.resume            -> {}
//   getters  (none)                     counts, isPaused, the version BullMQ wrote to meta
import { createInterface } from 'node:readline';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed', 'paused'];
const connections = [];

function openQueue({ prefix, queue }) {
  const url = process.env.REDIS_URL;
  if (!url) {
    throw new Error('set REDIS_URL');
  }
  const connection = new Redis(url, { maxRetriesPerRequest: null });
  connections.push(connection);
  return new Queue(queue, { connection, prefix });
}

function emit(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

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
    case 'pause':
      await queue.pause();
      return {};
    case 'resume':
      await queue.resume();
      return {};
    case 'getters':
      return {
        counts: await queue.getJobCounts(...STATES),
        isPaused: await queue.isPaused(),
        version: await queue.getVersion(),
      };
    default:
      throw new Error(`unknown command ${command}`);
  }
}

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
      const queue = openQueue(request);
      await queue.waitUntilReady();
      queues.set(key, queue);
    }
    emit({ ok: await run(queues.get(key), request.command, request.arg) });
  } catch (error) {
    emit({ error: String(error?.stack ?? error) });
  }
}
await Promise.all([...queues.values()].map((queue) => queue.close()));
await Promise.all(connections.map((connection) => connection.quit()));
