// Enqueue throughput of Node.js BullMQ: --mode single (one add at a time), concurrent (--tasks
// adds in flight), bulk (addBulk of --batch jobs). Prints {"jobs": n, "elapsed_s": s, "cpu_s": c}
// (cpu_s: this process's CPU time over the same span); one add before the clock starts.
import { Queue } from 'bullmq';
import IORedis from 'ioredis';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    redis: { type: 'string' },
    queue: { type: 'string' },
    prefix: { type: 'string', default: 'bull' },
    mode: { type: 'string', default: 'single' },
    jobs: { type: 'string', default: '10000' },
    tasks: { type: 'string', default: '50' },
    batch: { type: 'string', default: '1000' },
  },
});
const jobs = Number(args.jobs);
const connection = new IORedis(args.redis, { maxRetriesPerRequest: null });
const queue = new Queue(args.queue, { connection, prefix: args.prefix });
await queue.waitUntilReady();
await queue.add('noop', {});

const cpu = process.cpuUsage();
const started = performance.now();
if (args.mode === 'single') {
  for (let i = 0; i < jobs; i += 1) await queue.add('noop', {});
} else if (args.mode === 'concurrent') {
  let next = 0;
  const lane = async () => {
    while (next < jobs) {
      next += 1;
      await queue.add('noop', {});
    }
  };
  await Promise.all(Array.from({ length: Number(args.tasks) }, lane));
} else if (args.mode === 'bulk') {
  const batch = Number(args.batch);
  for (let i = 0; i < jobs; i += batch) {
    const n = Math.min(batch, jobs - i);
    await queue.addBulk(Array.from({ length: n }, () => ({ name: 'noop', data: {} })));
  }
} else {
  throw new Error(`unknown mode ${args.mode}`);
}
const elapsed = (performance.now() - started) / 1000;
const used = process.cpuUsage(cpu);
const cpuSeconds = (used.user + used.system) / 1e6;
await queue.close();
await connection.quit();
console.log(JSON.stringify({ jobs, elapsed_s: elapsed, cpu_s: cpuSeconds }));
process.exit(0);
