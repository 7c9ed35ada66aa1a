#!/usr/bin/env bash
# Runs the Autobahn|Testsuite against tether: its server (`tether echo`, tested by the suite's
# fuzzingclient) and its client (scripts/autobahn_client.py, tested by the fuzzingserver), with the
# tools in ../shared/tools/autobahn/.
#
#   scripts/autobahn.sh [--quick | --full | --compression-only | --cases LIST]
#                       [--side server|client|both] [--pure] [--strict] [--out DIR]
#
#   --quick              cases 1.* to 10.* (all but 12.* and 13.*), 301 cases a side, about a minute
#                        a side; NON-STRICT fails the run (the default; the test suite runs this)
#   --full               all 517 cases (12.x/13.x, permessage-deflate, take about 15 minutes a side)
#   --compression-only   12.* and 13.* only (216 cases)
#   --cases LIST         any selection, e.g. '9.*,10.*' (no check of the number of cases)
#   --side               server, client or both (default both)
#   --pure               pure Python: TETHER_NO_SPEEDUPS=1 (also taken from the environment)
#   --strict             NON-STRICT fails the run in any mode (always on with --quick)
#   --out DIR            reports under DIR (default: artifacts/autobahn/MODE[-pure]/SIDE/)
#
# tether echo runs with a 16 MiB max message size and the client with the same limit, so that the
# 9.x cases (16 MiB messages, up to 65,536 fragments) pass.
# It prints each side's summary line and a verdict, and exits non-zero when any case FAILED or is
# UNIMPLEMENTED, closed badly (FAILED / WRONG CODE / UNCLEAN), is NON-STRICT in a strict run, or
# when fewer cases ran than selected; unless the case is listed in scripts/autobahn-allowed.txt
# ("CASE JUSTIFICATION" per line, CASE optionally prefixed by "server:" or "client:").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))
shared=${TETHER_SHARED:-$root/../shared}
tools=$shared/tools/autobahn
allow_file=${AUTOBAHN_ALLOWED:-$root/scripts/autobahn-allowed.txt}

die() { echo "autobahn.sh: $*" >&2; exit 2; }

mode=quick side=both strict=0 out= cases=
pure=${TETHER_NO_SPEEDUPS:+1}
server_cmd=("$root/.venv/bin/tether" echo --host 127.0.0.1 --port '{port}' --max-size 16777216)
client_cmd=("$root/.venv/bin/python" "$root/scripts/autobahn_client.py" '{url}' '{agent}')
while [ $# -gt 0 ]; do
  case $1 in
    --quick) mode=quick; shift ;;
    --full) mode=full; shift ;;
    --compression-only) mode=compression; shift ;;
    --cases) mode=custom; cases=${2:?--cases needs a list}; shift 2 ;;
    --side) side=${2:?--side needs server, client or both}; shift 2 ;;
    --pure) pure=1; shift ;;
    --strict) strict=1; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    # To check the harness itself with another implementation (a command with {port} / {url} {agent}):
    --server-cmd) read -r -a server_cmd <<<"${2:?}"; shift 2 ;;
    --client-cmd) read -r -a client_cmd <<<"${2:?}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (try --help)" ;;
  esac
done
case $side in server | client | both) ;; *) die "--side must be server, client or both" ;; esac

case $mode in
  quick) select=(--exclude '12.*,13.*'); expected=301; strict=1 ;;
  full) select=(); expected=517 ;;
  compression) select=(--cases '12.*,13.*'); expected=216 ;;
  custom) select=(--cases "$cases"); expected=0 ;;
esac

[ -x "$tools/fuzz-server.sh" ] && [ -x "$tools/fuzz-client.sh" ] \
  || die "the Autobahn tools are not at $tools: shared/ must sit beside the repository (or set TETHER_SHARED)"
[ -x "${server_cmd[0]}" ] || command -v "${server_cmd[0]}" >/dev/null || die "${server_cmd[0]} not found: run scripts/setup first"

if [ -n "$pure" ]; then export TETHER_NO_SPEEDUPS=1; flavour=pure; suffix=-pure; else flavour=speedups; suffix=; fi
out=${out:-$root/artifacts/autobahn/$mode$suffix}
mkdir -p "$out"
# Several people share one work tree: two runs into the same folder would delete each other's
# reports, so they take turns (the commands below run with fd 8 closed).
exec 8>"$out/.lock"
flock -n 8 || { echo "autobahn.sh: waiting for another run into $out"; flock 8; }

# verdict INDEX_JSON SIDE: applies the rules above to one side's report.
verdict() {
  python3 - "$1" "$2" "$strict" "$expected" "$allow_file" "$3" <<'PY'
import json
import os
import sys

index, side, strict, expected, allow_file, run_log = sys.argv[1:]
strict, expected = strict == "1", int(expected)
allowed = {}
if os.path.exists(allow_file):
    for number, line in enumerate(open(allow_file, encoding="utf-8"), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        case, _, why = line.partition(" ")
        if not why.strip():
            print(f"autobahn.sh: {side}: FAILED: {allow_file}:{number}: {case} needs a justification")
            sys.exit(1)
        where, _, case = case.rpartition(":")
        if where in ("", side):
            allowed[case] = why.strip()
if not os.path.exists(index):
    print(f"autobahn.sh: {side}: FAILED: no report ({index}); see the logs beside it")
    sys.exit(1)
report = json.load(open(index, encoding="utf-8"))
cases = {case: result for results in report.values() for case, result in results.items()}
problems, excused = [], []
for case, result in sorted(cases.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
    behavior, close = result["behavior"], result["behaviorClose"]
    bad = (behavior in ("FAILED", "UNIMPLEMENTED")
           or close in ("FAILED", "WRONG CODE", "UNCLEAN")
           or (strict and behavior == "NON-STRICT"))
    if bad:
        what = f"{case} {behavior} (close {close})"
        (excused if case in allowed else problems).append(what)
for what in excused:
    print(f"autobahn.sh: {side}: allowed by autobahn-allowed.txt: {what}")
if expected and len(cases) != expected:
    problems.append(f"{len(cases)} cases ran, {expected} selected")
elif not cases:
    problems.append("no case ran")
# fuzz-server.sh / fuzz-client.sh note a server that died or a client that exited non-zero (the
# client does when a case raised anything but ConnectionClosed): a crash, whatever the report says.
for line in open(run_log, encoding="utf-8", errors="replace"):
    if line.startswith("note: "):
        problems.append(line[len("note: "):].strip())
if problems:
    print(f"autobahn.sh: {side}: FAILED: " + "; ".join(problems))
    sys.exit(1)
print(f"autobahn.sh: {side}: ok ({len(cases)} cases)")
PY
}

summaries=()
verdicts=()
status=0
run_side() { # run_side server|client
  local which=$1 agent="tether-$1$suffix" dir="$out/$1" log rc=0
  mkdir -p "$dir"
  log=$dir/run.txt
  echo "== autobahn $which side ($mode, $flavour): agent $agent, reports in $dir"
  if [ "$which" = server ]; then
    "$tools/fuzz-server.sh" "${select[@]}" --agent "$agent" --out "$dir" -- "${server_cmd[@]}" 8>&- 2>&1 | tee "$log" || rc=$?
    index=$dir/servers/index.json
  else
    "$tools/fuzz-client.sh" "${select[@]}" --agent "$agent" --out "$dir" -- "${client_cmd[@]}" 8>&- 2>&1 | tee "$log" || rc=$?
    index=$dir/clients/index.json
  fi
  summaries+=("$(grep '^autobahn ' "$log" | tail -n 1 || echo "autobahn $agent: no summary (exit $rc)")")
  if line=$(verdict "$index" "$which" "$log"); then :; else
    status=1
    # Say why right here (CI logs): the end of what the implementation under test printed.
    for f in "$dir/server.log" "$dir/client.log"; do
      [ -s "$f" ] || continue
      echo "-- last lines of $f:"
      tail -n 20 "$f" | cut -c1-300
    done
  fi
  echo "$line"
  verdicts+=("$line")
}

[ "$side" = client ] || run_side server
[ "$side" = server ] || run_side client

echo
echo "== autobahn summary ($mode, $flavour)"
printf '%s\n' "${summaries[@]}" "${verdicts[@]}"
exit $status
