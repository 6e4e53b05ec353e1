#!/bin/bash
# On the GPU host: a benchmark sequence longer than one device call (10 minutes), run detached, its files
# copied to $OUT while it runs: a machine can be lost between two calls (the idle release is 30 s), and
# a wait on a fresh machine must cost seconds, not the call.
#
#   bash benchmarks/gpu_detached.sh start DIR SEQUENCE.sh   runs `bash SEQUENCE.sh DIR` under setsid; the sequence
#                                                          appends its steps to DIR/progress, its last line "done"
#   bash benchmarks/gpu_detached.sh wait DIR SECONDS        until the sequence is done or SECONDS pass, copying DIR
#                                                          (logs as their tails) to $OUT/run.tgz, per-request
#                                                          detail to $OUT/detail.tgz (saturated runs, flood) and
#                                                          $OUT/points.tgz (load points), logs to $OUT/logs.tgz;
#                                                          exits 3 at once where DIR/progress is missing (fresh machine);
#                                                          gpu_compile_cache.sh's parts in DIR come back beside them
#
# Staging the offline bundle (the developers' guide: its parts copied one device call each) carries this
# checkout's tracked files with every call, within 64 MiB in all: benchmarks/results/ (~35 MiB) plus a
# ~30 MB part does not fit, so move benchmarks/results/ out of the tree during the GPU calls (nothing on the
# GPU host reads it) and back afterwards.
# Machines lost here: four times (2026-12-03 ~19:57, 2026-12-04 ~04:07, ~09:43 and ~12:52) the call after a
# wait found a fresh machine, once after a wait of only 308 s. The likeliest cause is the device's idle release:
# a machine goes back 30 s after a call returns unless the next call has come, and each loss followed a reply
# read at length before the next call. So: the next wait at once, reading the progress afterwards.
set -u
verb=$1 dir=$2
# Per-request detail files (tens of MB) travel apart: a file over 16 MiB does not come back, the rest must.
# The load points' files carry every request's token times too (~5 MB compressed in all): an archive of their own.
DETAIL='*_saturated.json'
snapshot() {
  tar czf "$OUT/run.tmp.tgz" --exclude='*.log' --exclude="$DETAIL" --exclude='*_flood_low.json' --exclude='compile_cache.tgz.part*' \
    --exclude='*_poisson_*.json' --exclude='*_bursty_*.json' \
    -C "$(dirname "$dir")" "$(basename "$dir")" 2>/dev/null && mv "$OUT/run.tmp.tgz" "$OUT/run.tgz"
  (cd "$(dirname "$dir")" && find "$(basename "$dir")" \( -name "$DETAIL" -o -name '*_flood_low.json' \) -print0 \
    | tar czf "$OUT/detail.tmp.tgz" --null -T - 2>/dev/null) && mv "$OUT/detail.tmp.tgz" "$OUT/detail.tgz"
  (cd "$(dirname "$dir")" && find "$(basename "$dir")" \( -name '*_poisson_*.json' -o -name '*_bursty_*.json' \) -print0 \
    | tar czf "$OUT/points.tmp.tgz" --null -T - 2>/dev/null) && mv "$OUT/points.tmp.tgz" "$OUT/points.tgz"
  # gpu_compile_cache.sh's parts, which the next session carries back to warm its first engine start
  find "$dir" -maxdepth 1 -name 'compile_cache.tgz.part*' -exec cp {} "$OUT/" \;
  local tails=/tmp/gpu_detached_logtails
  rm -rf "$tails" && mkdir -p "$tails"  # this run's logs only
  find "$dir" -name '*.log' | while read -r log; do
    name=${log#"$dir"/}; tail -c 400000 "$log" > "$tails/${name//\//_}"
  done
  tar czf "$OUT/logs.tmp.tgz" -C "$(dirname "$tails")" "$(basename "$tails")" 2>/dev/null \
    && mv "$OUT/logs.tmp.tgz" "$OUT/logs.tgz"
}
case "$verb" in
  start)
    mkdir -p "$dir"
    setsid nohup bash "$3" "$dir" > "$dir/sequence.log" 2>&1 < /dev/null &
    sleep 2; cat "$dir/progress" 2>/dev/null ;;
  wait)
    if [ ! -f "$dir/progress" ]; then
      echo "no detached run in $dir: this is a fresh machine (the last one was lost or given back)"; exit 3
    fi
    end=$(( $(date +%s) + $3 ))
    while [ "$(date +%s)" -lt "$end" ] && ! grep -q " done$" "$dir/progress"; do snapshot; sleep 15; done
    snapshot; cat "$dir/progress"; tail -5 "$dir/sequence.log" ;;
  *) echo "usage: $0 start DIR SEQUENCE.sh | wait DIR SECONDS"; exit 2 ;;
esac
