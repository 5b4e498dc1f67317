#!/bin/bash
# Issue 19 quiet-machine measurement, run once after the lead's CI (ci3) finished.
set -u
M=/work/wt/measure; B=/work/wt/measure-base; O=/tmp/measure
stamp() { echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*"; }
cd $M
stamp "http compare start"
.venv/bin/python bench/api/compare.py --baseline $B --rounds 3 --out $O/http.json > $O/http.log 2>&1; echo "rc $?" >> $O/http.log
stamp "enqueue compare start"
.venv/bin/python -m bench.compare_enqueue --baseline $B --rounds 3 --out $O/enqueue.json > $O/enqueue.log 2>&1; echo "rc $?" >> $O/enqueue.log
for r in 1 2 3; do
  stamp "worker round $r main"
  (cd $M && .venv/bin/python -m bench.run --only throughput --repeats 1 --no-report --out $O/worker-main-$r.json > $O/worker-main-$r.log 2>&1; echo "rc $?" >> $O/worker-main-$r.log)
  stamp "worker round $r base"
  (cd $B && .venv/bin/python -m bench.run --only throughput --repeats 1 --no-report --out $O/worker-base-$r.json > $O/worker-base-$r.log 2>&1; echo "rc $?" >> $O/worker-base-$r.log)
done
stamp "all done"
