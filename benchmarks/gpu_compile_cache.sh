#!/bin/bash
# On the GPU host: the engines' compile caches carried from one machine to the next. Every GPU session starts on
# a fresh machine, so its first engine start compiles from nothing (vllm serve: 251 s to healthy on 2026-12-03,
# ours 104 s after it on the warm cache; 228 vs 101 s in benchmarks/results/autoscaling_h200): ~2.5 min of a
# session's 30 minutes of device time. The caches are keyed by GPU, versions and engine configuration, so a
# cache saved on one H200 with the bundle's vLLM and torch warms the next H200's start.
#
#   bash benchmarks/gpu_compile_cache.sh save DIR       the caches (their default places, as the sequences leave
#                                                       them) into DIR/compile_cache.tgz.partNN, parts under the
#                                                       16 MiB a file coming back from $OUT may have
#   bash benchmarks/gpu_compile_cache.sh restore DIR    those parts (carried in DIR) back into place; no parts: no-op
#
# The sequences (request_path_one_gpu.sh, controller_one_gpu.sh) save at their end and restore from
# .gpu/compile_cache/ at their start. Here, after a session: copy the parts that came back ($OUT's
# compile_cache.tgz.part*) into .gpu/compile_cache/; the next session carries that folder in a staging call
# of its own (carry [".gpu/compile_cache"], command `true`): ignored paths stay on the machine between calls.
set -u
verb=$1 dir=$2
PART_BYTES=15000000
MAX_PARTS=4  # $OUT brings back 8 files: gpu_detached.sh's four archives and these
# Where each engine keeps its compiled artifacts when nothing points them elsewhere (serve_app/compile_cache.py
# names the same four); paths relative to / so that a restore puts them back where the engines look.
caches() {
  for path in "${VLLM_CACHE_ROOT:-$HOME/.cache/vllm}" "$HOME/.cache/flashinfer" "${TRITON_CACHE_DIR:-$HOME/.triton}" \
              "${TORCHINDUCTOR_CACHE_DIR:-/tmp/torchinductor_$(id -un)}"; do
    [ -d "$path" ] && echo "${path#/}"
  done
}
case "$verb" in
  save)
    mkdir -p "$dir" && rm -f "$dir"/compile_cache.tgz.part*
    mapfile -t found < <(caches)
    [ "${#found[@]}" -eq 0 ] && { echo "no compile cache to save"; exit 0; }
    tar czf - -C / "${found[@]}" | split -b "$PART_BYTES" -d - "$dir/compile_cache.tgz.part"
    if [ "$(ls "$dir"/compile_cache.tgz.part* | wc -l)" -gt "$MAX_PARTS" ]; then
      rm -f "$dir"/compile_cache.tgz.part*; echo "compile cache over $MAX_PARTS parts: not kept"; exit 0
    fi
    echo "saved ${found[*]}: $(cat "$dir"/compile_cache.tgz.part* | wc -c) bytes in $(ls "$dir"/compile_cache.tgz.part* | wc -l) parts" ;;
  restore)
    parts=("$dir"/compile_cache.tgz.part*)
    [ -e "${parts[0]}" ] || { echo "no compile cache in $dir: the first start compiles"; exit 0; }
    cat "${parts[@]}" | tar xzf - -C / && echo "restored: $(caches | tr '\n' ' ')" ;;
  *) echo "usage: $0 save DIR | restore DIR"; exit 2 ;;
esac
