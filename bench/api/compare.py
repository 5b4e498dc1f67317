"""Before and after in one run: this checkout's ``conveyor api`` against another checkout's
(the baseline) and the seed's Node.js API, interleaved round by round.

    git worktree add /work/wt/httpbase <commit> && (cd /work/wt/httpbase && make setup)
    .venv/bin/python bench/api/compare.py --baseline /work/wt/httpbase --rounds 3

Each round runs ``bench/api/run.py --repeats 1`` once per side, each side from its own
checkout (its own code and virtualenv), so a busy machine slows them alike; a side listed in
``--variants`` (default: default,node) is a variant of run.py. Prints every run, then medians
over the rounds and the medians of the per-round ratios to the baseline and to Node. Not a
test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KEYS = ("rps", "jobs_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")


def run_side(checkout: Path, variant: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            str(checkout / ".venv" / "bin" / "python"),
            str(checkout / "bench" / "api" / "run.py"),
            "--variants", variant, "--repeats", "1", "--duration", f"{args.duration:g}",
            "--warmup", f"{args.warmup:g}", "--scenarios", args.scenarios, "--out", out.name,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, cwd=checkout)
        medians: dict[str, dict[str, float]] = json.loads(Path(out.name).read_text())["medians"][
            variant
        ]
        return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="default,node")
    parser.add_argument("--baseline-variants", default="default")
    parser.add_argument("--scenarios", default="single c=1,single c=50,bulk(100) c=8")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sides = [(f"base:{v}", args.baseline, v) for v in args.baseline_variants.split(",")]
    sides += [(v, REPO, v) for v in args.variants.split(",")]
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _, _ in sides}
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    for round_no in range(args.rounds):
        for name, checkout, variant in sides:
            result = run_side(checkout, variant, args)
            runs[name].append(result)
            for scenario, m in result.items():
                print(
                    f"[{round_no + 1}/{args.rounds}] {name:16} {scenario:14} "
                    f"{m['rps']:8.0f} req/s {m['jobs_per_s']:8.0f} jobs/s "
                    f"p50 {m['p50_ms']:6.2f} p99 {m['p99_ms']:6.2f} ms "
                    f"cpu {m['server_cpu_us_per_request']:6.0f} us/req",
                    flush=True,
                )
        loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    base = f"base:{args.baseline_variants.split(',')[0]}"
    print(f"\nload averages (1, 5, 15 min) at start and after each round: {' | '.join(loads)}")
    print(f"medians of {args.rounds} rounds; ratios are medians of per-round ratios\n")
    print("| side | scenario | requests/s | jobs/s | p50 ms | p99 ms | server CPU µs/req "
          f"| req/s x {base} | req/s x node | p99 x node |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, rounds in runs.items():
        for scenario in rounds[0]:
            med = {k: statistics.median(r[scenario][k] for r in rounds) for k in KEYS}

            def ratio(other: str, key: str, scenario: str = scenario, rounds: list = rounds) -> str:  # type: ignore[type-arg]
                pairs = [
                    (r[scenario][key], o[scenario][key])
                    for r, o in zip(rounds, runs.get(other, []), strict=False)
                    if scenario in o and o[scenario][key]
                ]
                return f"{statistics.median(a / b for a, b in pairs):.2f}x" if pairs else "-"

            summary.setdefault(name, {})[scenario] = med
            print(
                f"| {name} | {scenario} | {med['rps']:,.0f} | {med['jobs_per_s']:,.0f} | "
                f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                f"{med['server_cpu_us_per_request']:,.0f} | {ratio(base, 'rps')} | "
                f"{ratio('node', 'rps')} | {ratio('node', 'p99_ms')} |"
            )
    if args.out:
        args.out.write_text(
            json.dumps({"loads": loads, "medians": summary, "runs": runs}, indent=1)
        )


if __name__ == "__main__":
    sys.exit(main())
