// The seed's API service (src/api.js in the original project): express + BullMQ, POST /enqueue
// adds the job to the queue `taskQueue`. Baseline for bench/api/run.py; WORKERS=2 uses
// node:cluster to run two processes on one port.
const cluster = require("node:cluster");
const express = require("express");
const { Queue } = require("bullmq");

const port = Number(process.env.PORT || 3000);
const workers = Number(process.env.WORKERS || 1);
const redisUrl = new URL(process.env.REDIS_URL || "redis://127.0.0.1:6379");

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const queue = new Queue(process.env.QUEUE || "taskQueue", {
    connection: { host: redisUrl.hostname, port: Number(redisUrl.port || 6379) },
  });
  const app = express();
  app.use(express.json());
  app.get("/readyz", (req, res) => res.json({ status: "ready" }));
  app.post("/enqueue", async (req, res) => {
    try {
      const { name, data = {}, options = {} } = req.body;
      const job = await queue.add(name, data, {
        attempts: 6,
        backoff: { type: "exponential", delay: 1000 },
        ...options,
      });
      res.status(201).json({ id: job.id, name: job.name });
    } catch (err) {
      res.status(500).json({ error: String(err) });
    }
  });
  app.listen(port, "127.0.0.1");
}
