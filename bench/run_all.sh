#!/bin/sh
# Run every benchmark once, one after the other, and keep their output.
#
#   bench/run_all.sh                 full sizes (several minutes; the CRL one seeds 1M rows)
#   bench/run_all.sh --quick         small sizes, a smoke run of under a minute
#   RESULTS=/some/dir bench/run_all.sh
#
# Each script prints its table and writes <name>.txt and <name>.json under $RESULTS
# (default: bench/results, which is not meant to be committed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${PYTHON:-"$root/.venv/bin/python"}
[ -x "$python" ] || python=python3
results=${RESULTS:-"$here/results"}
mkdir -p "$results"

for name in issue_bench crl_bench import_bench; do
    echo "== $name $*"
    "$python" "$here/$name.py" --json "$results/$name.json" "$@" | tee "$results/$name.txt"
done
echo "results in $results"
