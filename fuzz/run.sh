#!/usr/bin/env bash
# Runs the fuzz harnesses for SECONDS each (atheris / libFuzzer), prints the executions and coverage of
# each, and exits non-zero when any of them found something.
#
#   fuzz/run.sh SECONDS [HARNESS ...]        (harnesses: safetensors gguf config tokenizer grammar; default all)
#
# Findings go to fuzz/crashes/: an input whose check raised something other than ValueError (or failed a
# property) as <harness>-exc-<hash>, a crash / hang / memory blow-up as <harness>-{crash,timeout,oom}-<sha1>
# (libFuzzer's -artifact_prefix). A crash, timeout or OOM stops libFuzzer; the harness is then restarted for
# the time left (at most 3 times). tests/test_fuzz_regressions.py replays fuzz/crashes/ and the corpora.
# Inputs found interesting are kept in fuzz/.work/corpus-<harness> (not committed; later runs start from
# them); the committed seeds are fuzz/corpus/<harness>. FUZZ_KNOWN=report also reports already known bugs
# (by default the harnesses skip inputs that hit one, see KNOWN in fuzz_config.py).
set -u
cd "$(dirname "$0")/.."
SECS=${1:?usage: fuzz/run.sh SECONDS [HARNESS ...]}
shift
HARNESSES=${*:-safetensors gguf config tokenizer grammar}
WORK=${FUZZ_WORK:-$PWD/fuzz/.work}
mkdir -p fuzz/crashes "$WORK"
python -c "import atheris" 2>/dev/null || { echo "atheris is missing: pip install atheris" >&2; exit 2; }

status=0
summary=""
for h in $HARNESSES; do
  [ -f "fuzz/fuzz_$h.py" ] || { echo "no harness fuzz/fuzz_$h.py" >&2; exit 2; }
  seeds=fuzz/corpus/$h
  [ -n "$(ls -A "$seeds" 2>/dev/null)" ] || python "fuzz/fuzz_$h.py" --make-seeds
  live=$WORK/corpus-$h
  log=$WORK/$h.log
  tmp=$WORK/tmp-$h
  mkdir -p "$live"
  : >"$log"
  rm -f "$WORK/$h-findings.log"
  before=$(ls fuzz/crashes | sort)
  start=$(date +%s)
  stops=0
  echo "== $h: fuzzing for ${SECS}s (log: $log)"
  while :; do
    left=$((SECS - ($(date +%s) - start)))
    [ "$left" -gt 0 ] || break
    rm -rf "$tmp" && mkdir -p "$tmp"
    TMPDIR=$tmp FUZZ_WORK=$WORK python "$PWD/fuzz/fuzz_$h.py" "$live" "$seeds" -max_total_time="$left" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="fuzz/crashes/$h-" >>"$log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] && break
    stops=$((stops + 1))
    echo "   libFuzzer stopped (exit $rc): $(grep -E 'ERROR: libFuzzer|Test unit written' "$log" | tail -2 | tr '\n' ' ')"
    # corpus files are named by the SHA-1 of their content, as the artifact is: if the input came from the
    # working corpus, drop it there, or the restart would stop on it again while loading the corpus
    art=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | awk '{print $5}')
    [ -n "$art" ] && rm -f "$live/${art##*-}"
    [ "$stops" -lt 4 ] || break
  done
  rm -rf "$tmp"
  new=$(comm -13 <(echo "$before") <(ls fuzz/crashes | sort) | sed 's|^|fuzz/crashes/|')
  if [ "$h" = config ] && [ -n "$new" ]; then  # FuzzedDataProvider bytes -> JSON cases
    python fuzz/fuzz_config.py --to-case $new >/dev/null 2>&1
  fi
  execs=$(grep -h '^stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  rate=$(awk -v n="$execs" -v t="$SECS" 'BEGIN {printf "%d", n / t}')
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
  found=$(grep -h '^==== FINDING' "$WORK/$h-findings.log" 2>/dev/null | awk '{print $3}' | sort -u | wc -l)
  line="$h: $execs executions (~$rate/s), ${cov:-no coverage reported}, $found distinct exception finding(s), $stops crash/timeout/oom stop(s)"
  echo "   $line"
  [ -n "$new" ] && echo "   new files: $(echo $new)"
  if [ "$found" -gt 0 ] || [ "$stops" -gt 0 ]; then
    status=1
    grep -h '^==== FINDING' "$WORK/$h-findings.log" 2>/dev/null | sort -u | sed 's/^/   /'
  fi
  summary="$summary$line"$'\n'
done
echo
echo "== summary ($SECS s per harness)"
printf "%s" "$summary"
[ "$status" -eq 0 ] && echo "no findings" || echo "FINDINGS: see above, fuzz/crashes/ and $WORK/*-findings.log"
exit $status
