// Contender: a Node.js BullMQ Worker, with BullMQ's defaults (lock renewal, stalled-job check).
// Speaks the same protocol as bench/workers/protocol.py: prints {"ready":true}, waits for
// "go" on stdin, records [k, start] for jobs whose data has k, counts completions and failed
// attempts, stops after --expect of them (or on "stop"), prints one JSON report.
import { Worker } from 'bullmq';
import IORedis from 'ioredis';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';

const { values: args } = parseArgs({
  options: {
    redis: { type: 'string' },
    queue: { type: 'string' },
    prefix: { type: 'string', default: 'bull' },
    concurrency: { type: 'string', default: '100' },
    expect: { type: 'string', default: '0' },
  },
});
const expect = Number(args.expect);
const wall = () => (performance.timeOrigin + performance.now()) / 1000;

const starts = [];
let finished = 0;
let tGo = 0;
let tLast = 0;
let cpuGo = null;
let cpuEnd = null;
let resolveDone;
const done = new Promise((resolve) => { resolveDone = resolve; });
let resolveGo;
const go = new Promise((resolve) => { resolveGo = resolve; });

const onFinished = () => {
  finished += 1;
  tLast = wall();
  if (expect && finished >= expect) resolveDone();
};

createInterface({ input: process.stdin })
  .on('line', (line) => {
    const word = line.trim();
    if (word === 'go') {
      tGo = wall();
      cpuGo = process.cpuUsage();
      resolveGo();
    } else if (word === 'stop') {
      resolveDone();
    }
  })
  .on('close', () => resolveDone());

const connection = new IORedis(args.redis, { maxRetriesPerRequest: null });
const worker = new Worker(
  args.queue,
  async (job) => {
    const data = job.data;
    if (data && data.k !== undefined && data.k !== null) starts.push([data.k, wall()]);
    if (data && data.fail) throw new Error('bench: this job fails on purpose');
    if (data && data.sleep_ms) await new Promise((resolve) => setTimeout(resolve, data.sleep_ms));
  },
  { connection, prefix: args.prefix, concurrency: Number(args.concurrency), autorun: false },
);
worker.on('completed', onFinished);
worker.on('failed', onFinished);
worker.on('error', (err) => process.stderr.write(`worker error: ${err}\n`));
await worker.waitUntilReady();
console.log(JSON.stringify({ ready: true }));

await go;
const running = worker.run();
await done;
cpuEnd = process.cpuUsage(cpuGo);
console.log(JSON.stringify({
  t_go: tGo,
  t_last: tLast,
  finished,
  starts,
  rss_mb: process.memoryUsage().rss / 2 ** 20,
  cpu_s: (cpuEnd.user + cpuEnd.system) / 1e6,
  contender: 'bullmq-node',
  concurrency: Number(args.concurrency),
}));
await worker.close();
await running;
await connection.quit();
process.exit(0);
