#!/bin/bash
set -u
M=/work/wt/measure; B=/work/wt/measure-base; O=/tmp/measure
while kill -0 $(cat $O/driver2.pid) 2>/dev/null; do sleep 2; done
echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) profile start"
for r in 1 2 3 4 5; do
  for t in main base; do
    T=$M; [ $t = base ] && T=$B
    for h in production none; do
      out=$(cd $T && .venv/bin/python -m bench.profile --hooks $h --concurrency 10 --jobs 20000 --repeats 1 2>&1 | tail -3 | tr '\n' ' ')
      echo "[$r] $t hooks=$h load=$(cut -d' ' -f1 /proc/loadavg) :: $out"
    done
  done
done
echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) profile done"
