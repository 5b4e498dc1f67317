#!/bin/bash
set -u
M=/work/wt/measure; B=/work/wt/measure-base; O=/tmp/measure
stamp() { echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*"; }
while kill -0 $(cat $O/driver.pid) 2>/dev/null; do sleep 2; done
cd $M
stamp "enqueue compare 2 start"
.venv/bin/python -m bench.compare_enqueue --baseline $B --rounds 5 --single-jobs 10000 --bulk-jobs 50000 --out $O/enqueue2.json > $O/enqueue2.log 2>&1; echo "rc $?" >> $O/enqueue2.log
stamp "http c=1 start"
.venv/bin/python bench/api/compare.py --baseline $B --rounds 5 --scenarios "single c=1" --out $O/http-c1.json > $O/http-c1.log 2>&1; echo "rc $?" >> $O/http-c1.log
stamp "http 2 processes start"
.venv/bin/python bench/api/compare.py --baseline $B --sides base:workers-2,workers-2,node-2 --scenarios "single c=1,single c=50" --rounds 3 --out $O/http-2p.json > $O/http-2p.log 2>&1; echo "rc $?" >> $O/http-2p.log
stamp "more done"
