#!/bin/bash
# Issue 19 quiet-machine measurement at the end of session 5: final main (M) vs the session start (B) vs Node.
set -u
M=/work/wt/measure; B=/work/wt/base; O=/work/notes/measure
mkdir -p $O
stamp() { echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*"; }
cd $M
stamp "http compare start"
.venv/bin/python bench/api/compare.py --baseline $B --rounds 3 --out $O/http.json > $O/http.log 2>&1; echo "rc $?" >> $O/http.log
stamp "http c=1 start"
.venv/bin/python bench/api/compare.py --baseline $B --rounds 5 --scenarios "single c=1" --out $O/http-c1.json > $O/http-c1.log 2>&1; echo "rc $?" >> $O/http-c1.log
stamp "http 2 processes start"
.venv/bin/python bench/api/compare.py --baseline $B --sides base:workers-2,workers-2,node-2 --scenarios "single c=1,single c=50" --rounds 3 --out $O/http-2p.json > $O/http-2p.log 2>&1; echo "rc $?" >> $O/http-2p.log
stamp "enqueue compare start"
.venv/bin/python -m bench.compare_enqueue --baseline $B --rounds 5 --single-jobs 10000 --bulk-jobs 50000 --out $O/enqueue.json > $O/enqueue.log 2>&1; echo "rc $?" >> $O/enqueue.log
for r in 1 2 3; do
  stamp "worker round $r main"
  (cd $M && .venv/bin/python -m bench.run --only throughput --repeats 1 --no-report --out $O/worker-main-$r.json > $O/worker-main-$r.log 2>&1; echo "rc $?" >> $O/worker-main-$r.log)
  stamp "worker round $r base"
  (cd $B && .venv/bin/python -m bench.run --only throughput --repeats 1 --no-report --out $O/worker-base-$r.json > $O/worker-base-$r.log 2>&1; echo "rc $?" >> $O/worker-base-$r.log)
done
stamp "all done"
