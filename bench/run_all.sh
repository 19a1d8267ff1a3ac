#!/bin/sh
# Run every benchmark (bench/*_bench.py) once, one after the other, and keep their output.
#
#   bench/run_all.sh                 full sizes (tens of minutes; the CRL one seeds 1M rows)
#   bench/run_all.sh --quick         small sizes where a script offers them (a smoke run)
#   RESULTS=/some/dir bench/run_all.sh
#
# Each script's output goes to the terminal and to <name>.txt under $RESULTS (default:
# bench/results, which is not meant to be committed); a script that takes --json also
# writes <name>.json there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${PYTHON:-"$root/.venv/bin/python"}
[ -x "$python" ] || python=python3
results=${RESULTS:-"$here/results"}
mkdir -p "$results"
quick=""
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
    esac
done

for script in "$here"/*_bench.py; do
    name=$(basename "$script" .py)
    help=$("$python" "$script" --help)
    set --
    if [ -n "$quick" ]; then
        case "$help" in *"[--quick]"*) set -- --quick ;; *) echo "== $name has no --quick: full size" ;; esac
    fi
    case "$help" in *"[--json "*) set -- "$@" --json "$results/$name.json" ;; esac
    echo "== $name $*"
    "$python" "$script" "$@" | tee "$results/$name.txt"
done
echo "results in $results"
