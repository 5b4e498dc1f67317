// Shared by the interop scripts: where to connect, and how a job looks on stdout.
// Everything comes from the environment the Python tests set: REDIS_URL, BULL_PREFIX, QUEUE
// (the prefix and queue may be given per call instead).
import { Queue } from 'bullmq';
import { Cluster, Redis } from 'ioredis';

const connections = [];

export function target(given = {}) {
  const url = process.env.REDIS_URL;
  const prefix = given.prefix ?? process.env.BULL_PREFIX;
  const queue = given.queue ?? process.env.QUEUE;
  if (!url || !prefix || !queue) {
    throw new Error('set REDIS_URL, BULL_PREFIX and QUEUE');
  }
  // npm's bullmq 6 no longer depends on ioredis: it is installed beside it (package.json).
  // BullMQ duplicates this connection for its blocking commands.
  const connection = connect(url);
  connections.push(connection);
  return { connection, prefix, queue };
}

// Conveyor's redis+sentinel:// URL as ioredis options (docs/scaling.md shows the same).
const SENTINEL_URL = /^(rediss?)\+sentinel:\/\/(?:([^:@]*)(?::([^@]*))?@)?([^/?]+)\/([^/?]+)(?:\/(\d+))?/;

function redisArguments(url) {
  const found = SENTINEL_URL.exec(url);
  if (!found) {
    return [url, { maxRetriesPerRequest: null }];
  }
  const [, scheme, username, password, hosts, name, db] = found;
  const options = {
    sentinels: hosts.split(',').map((hostPort) => {
      const [host, port] = hostPort.split(':');
      return { host, port: Number(port || 26379) };
    }),
    name: decodeURIComponent(name),
    db: Number(db || 0),
    maxRetriesPerRequest: null,
  };
  if (username) options.username = decodeURIComponent(username);
  if (password) options.password = decodeURIComponent(password);
  if (process.env.REDIS_SENTINEL_PASSWORD) {
    options.sentinelPassword = process.env.REDIS_SENTINEL_PASSWORD;
  }
  if (scheme === 'rediss') {
    options.tls = {};
    options.enableTLSForSentinelMode = true;
  }
  return [options];
}

// A redis+cluster://[user:password@]host:port,host:port URL (Conveyor's form) is an ioredis
// Cluster; anything else is redisArguments'.
function connect(url) {
  const cluster = url.match(/^rediss?\+cluster:\/\/(?:([^@]*)@)?([^/?]+)/);
  if (!cluster) {
    return new Redis(...redisArguments(url));
  }
  const [user, password] = (cluster[1] ?? '').split(':').map(decodeURIComponent);
  const nodes = cluster[2].split(',').map((hostPort) => {
    const at = hostPort.lastIndexOf(':');
    return { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
  });
  return new Cluster(nodes, {
    redisOptions: { maxRetriesPerRequest: null, username: user || undefined, password: password || undefined },
  });
}

export function openQueue(given = {}) {
  const { connection, prefix, queue } = target(given);
  return new Queue(queue, { connection, prefix });
}

// BullMQ leaves connections it was given open: close them once its objects are closed.
export async function disconnect() {
  await Promise.all(connections.map((connection) => connection.quit()));
}

// One JSON document per line on stdout: the Python side reads them.
export function emit(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

export async function view(job) {
  if (!job) {
    return null;
  }
  return {
    id: job.id,
    name: job.name,
    data: job.data,
    opts: job.opts,
    state: await job.getState(),
    attemptsMade: job.attemptsMade,
    attemptsStarted: job.attemptsStarted,
    returnvalue: job.returnvalue ?? null,
    failedReason: job.failedReason ?? null,
    stacktrace: job.stacktrace ?? [],
    delay: job.delay,
    priority: job.priority,
    progress: job.progress,
    timestamp: job.timestamp,
    processedOn: job.processedOn ?? null,
    finishedOn: job.finishedOn ?? null,
    processedBy: job.processedBy ?? null,
    stalledCounter: job.stalledCounter ?? 0,
    deduplicationId: job.deduplicationId ?? null,
  };
}
