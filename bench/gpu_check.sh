#!/usr/bin/env bash
# The GPU check kit: proves specprobe on CUDA in one command (docs/gpu.md).
#
#   bash bench/gpu_check.sh                               on a GPU machine (carry .whl: bench/fetch_gpu_wheels.sh)
#   SPECPROBE_GPU_CHECK_CPU=1 OUT=/tmp/gc bash bench/gpu_check.sh   the same steps on the CPU, tiny sizes
#
# Steps, each with its own timeout inside one budget (420 s on a GPU), each run even if an earlier one failed:
#   0. refuse (exit 2, with a summary) if torch sees no CUDA (or does not answer in 120 s), unless
#      SPECPROBE_GPU_CHECK_CPU=1; install the carried wheels (.whl/*.whl) into a temporary folder, and put it on
#      PYTHONPATH if what they install imports here; print GPU, driver and versions
#   1. pytest -m cuda tests/test_cuda.py
#   2. python -m bench --device cuda --dtype bfloat16 (through bench.gpu_kit, with the precomputed lexicon)
#   3. the same with --shape llama-3.2-3b, if bench has that option
#   4. the summary: $OUT/gpu_check.json (copy it to bench/results-cuda.json to keep it); an interim one, status
#      "incomplete", is written after each step, so a run stopped from outside still leaves what it found
# Writes to $OUT (default out/gpu-check), plain files only: gpu_check.json, gpu_check.log, pytest.log,
# bench.log, bench.json, bench-shape.log, bench-shape.json. Exit status: 0 all passed, 1 something failed,
# 2 refused (no CUDA).
# Environment: PYTHON (default .venv/bin/python if present, else python3), SPECPROBE_GPU_CHECK_BUDGET_S,
# SPECPROBE_GPU_CHECK_PROBE_S (the CUDA probe's, the carried wheels' import check's and the env step's timeout, 120),
# SPECPROBE_GPU_CHECK_WHEELS (the folder of the wheels to install, default .whl),
# SPECPROBE_GPU_BENCH_ARGS (the GPU bench's size options, default "--n-texts 64 --repeats 2 --no-vocab-scaling"),
# SPECPROBE_SMEDQA (the S-MedQA file; default ../shared/data/s-medqa/, then .whl/data/),
# SPECPROBE_GPU_CHECK_STEPS (default "wheels pytest bench shape": a rerun can leave out what already passed),
# SPECPROBE_GPU_CHECK_CAP_{PYTEST,BENCH,SHAPE}_S (one step's own timeout cap; defaults 180, 200, 120 on a GPU).
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/out/gpu-check}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
cd "$REPO" || exit 1

CPU_MODE=0
[ "${SPECPROBE_GPU_CHECK_CPU:-0}" = "1" ] && CPU_MODE=1
if (( CPU_MODE )); then MODE=cpu; else MODE=cuda; fi
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY=python3; fi

# time: one budget for the whole kit; each step gets min(its cap, what is left - RESERVE)
if (( CPU_MODE )); then
  BUDGET="${SPECPROBE_GPU_CHECK_BUDGET_S:-3000}"; CAP_PYTEST=1500; CAP_BENCH=900; CAP_SHAPE=0
else
  BUDGET="${SPECPROBE_GPU_CHECK_BUDGET_S:-420}"; CAP_PYTEST=180; CAP_BENCH=200; CAP_SHAPE=120
fi
CAP_PYTEST="${SPECPROBE_GPU_CHECK_CAP_PYTEST_S:-$CAP_PYTEST}"
CAP_BENCH="${SPECPROBE_GPU_CHECK_CAP_BENCH_S:-$CAP_BENCH}"
CAP_SHAPE="${SPECPROBE_GPU_CHECK_CAP_SHAPE_S:-$CAP_SHAPE}"
# the settings are checked before anything is removed or started: a typo costs nothing
for setting in SPECPROBE_GPU_CHECK_BUDGET_S SPECPROBE_GPU_CHECK_CAP_PYTEST_S SPECPROBE_GPU_CHECK_CAP_BENCH_S \
               SPECPROBE_GPU_CHECK_CAP_SHAPE_S SPECPROBE_GPU_CHECK_PROBE_S; do
  value="${!setting-}"
  if [ -n "$value" ] && ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then  # no 0 (timeout 0 is no limit), no leading 0s
    echo "gpu_check: $setting='$value' is not a whole number of seconds"; exit 2
  fi
done
read -r -d '' -a step_list <<< "${SPECPROBE_GPU_CHECK_STEPS:-wheels pytest bench shape}"  # spaces, tabs, newlines
for s in "${step_list[@]}"; do
  case "$s" in wheels|pytest|bench|shape) ;; *)
    echo "gpu_check: SPECPROBE_GPU_CHECK_STEPS: unknown step '$s' (the steps: wheels pytest bench shape)"; exit 2 ;;
  esac
done
if (( ${#step_list[@]} == 0 )); then
  echo "gpu_check: SPECPROBE_GPU_CHECK_STEPS is empty (the steps: wheels pytest bench shape)"; exit 2
fi
STEPS=" ${step_list[*]} "
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
# what this run writes afresh (a step left out keeps its earlier files in $OUT)
rm -f "$OUT"/{gpu_check.json,gpu_check.log}
if wanted pytest; then rm -f "$OUT/pytest.log"; fi
if wanted bench; then rm -f "$OUT"/{bench.log,bench.json}; fi
if wanted shape; then rm -f "$OUT"/{bench-shape.log,bench-shape.json}; fi
RESERVE=20
PROBE_S="${SPECPROBE_GPU_CHECK_PROBE_S:-120}"  # the CUDA probe and the machine description: a hung driver stops here
START="$(date +%s)"
DEADLINE=$(( START + BUDGET ))

WORK="$(mktemp -d "${TMPDIR:-/tmp}/specprobe-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
export SPECPROBE_GPU_CHECK_RECORD="$WORK/observations.jsonl" SPECPROBE_GPU_CHECK_TESTS="$WORK/tests.jsonl"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if (( CPU_MODE )); then export CUDA_VISIBLE_DEVICES=""; fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

interim_summary() {  # the summary so far, replaced after each step and at the end
  "$PY" -m bench.gpu_kit summary --work "$WORK" --out-dir "$OUT" --mode "$MODE" --started "$START" --interim \
    >/dev/null 2>&1 || echo "gpu_check: could not write the interim summary"
}

record_step() {  # name status rc seconds timeout_s message log
  local msg="${6//\\/\\\\}"
  msg="${msg//\"/\\\"}"
  printf '{"step": "%s", "status": "%s", "rc": %s, "seconds": %s, "timeout_s": %s, "message": "%s", "log": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" "$msg" "$7" >> "$WORK/steps.jsonl"
  echo "gpu_check: step $1: $2${6:+ ($6)}"
}

run_step() {  # name cap log command...: runs the command under its timeout, its output into $OUT/log too
  local name="$1" cap="$2" log="$3"; shift 3
  local left=$(( DEADLINE - $(date +%s) - RESERVE ))
  local t=$(( cap < left ? cap : left ))
  if (( t < 30 )); then
    record_step "$name" skipped null 0 "$t" "not started: ${left}s left of the kit's ${BUDGET}s budget" "$log"
    return 0
  fi
  echo
  echo "== gpu_check: $name (timeout ${t}s): $*"
  local t0; t0="$(now)"
  timeout --kill-after=15 "$t" "$@" 2>&1 | tee "$OUT/$log"
  local rc="${PIPESTATUS[0]}"
  local secs; secs="$(since "$t0")"
  local status=ok msg=""
  if (( rc == 124 || rc == 137 )); then status=timeout; msg="stopped after its ${t}s timeout"
  elif (( rc != 0 )); then status=failed; msg="exit status $rc"; fi
  record_step "$name" "$status" "$rc" "$secs" "$t" "$msg" "$log"
  interim_summary
}

install_wheels() {  # the carried wheels into $WORK/site, on PYTHONPATH only if what they install imports here
  local wheels=("$@") t0 rc=0
  t0="$(now)"
  echo "== gpu_check: installing ${#wheels[@]} carried wheel(s): ${wheels[*]##*/}"
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "${wheels[@]}"; then
    record_step wheels failed 1 "$(since "$t0")" null "pip could not install the carried wheels (the tests that need them skip)" gpu_check.log
    return 0
  fi
  local path="$REPO:$WORK/site${PYTHONPATH#"$REPO"}"
  PYTHONPATH="$path" timeout --kill-after=10 "$PROBE_S" "$PY" -m bench.gpu_kit check-site --site "$WORK/site" || rc=$?
  if (( rc == 0 )); then
    export PYTHONPATH="$path"
    record_step wheels ok 0 "$(since "$t0")" null "" gpu_check.log
  else  # e.g. peft imports bitsandbytes for every LoRA layer: a broken one would fail every test, not only QLoRA
    record_step wheels failed "$rc" "$(since "$t0")" null "what the carried wheels install does not import here (exit $rc; see gpu_check.log): left off PYTHONPATH, so only the tests that need it skip" gpu_check.log
  fi
}

main() {
  echo "== gpu_check: $MODE mode, python $PY, out $OUT, budget ${BUDGET}s"

  # 0. CUDA or refuse; the carried wheels; the machine
  local probe=0
  timeout --kill-after=10 "$PROBE_S" "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' || probe=$?
  if (( probe != 0 )); then
    if (( ! CPU_MODE )); then
      local why="CUDA is not available to torch (torch.cuda.is_available() is False): this kit checks specprobe on a GPU. Run it on a GPU machine, or set SPECPROBE_GPU_CHECK_CPU=1 to run the same steps on the CPU at tiny sizes."
      if (( probe == 124 || probe == 137 )); then
        why="torch did not say within ${PROBE_S}s whether CUDA is available (a hung driver?): this kit checks specprobe on a GPU."
      elif (( probe != 3 )); then
        why="$PY could not import torch to ask for CUDA (exit $probe; see the output above): this kit checks specprobe on a GPU."
      fi
      echo "gpu_check: REFUSED: $why" >&2
      timeout --kill-after=10 "$PROBE_S" "$PY" -m bench.gpu_kit env --out "$WORK/env.json" || true
      "$PY" -m bench.gpu_kit summary --work "$WORK" --out-dir "$OUT" --mode "$MODE" --started "$START" --refused "$why"
      return 2
    fi
  elif (( CPU_MODE )); then
    echo "gpu_check: SPECPROBE_GPU_CHECK_CPU=1 but torch still sees CUDA" >&2
  fi
  shopt -s nullglob
  local wheels=("${SPECPROBE_GPU_CHECK_WHEELS:-$REPO/.whl}"/*.whl)
  shopt -u nullglob
  if ! wanted wheels; then
    record_step wheels skipped null 0 null "not in SPECPROBE_GPU_CHECK_STEPS" gpu_check.log
  elif (( ${#wheels[@]} == 0 )); then
    record_step wheels skipped null 0 null "no wheels in .whl/ (bench/fetch_gpu_wheels.sh fetches them)" gpu_check.log
  else
    install_wheels "${wheels[@]}"
  fi
  if command -v nvidia-smi >/dev/null 2>&1 && (( ! CPU_MODE )); then timeout --kill-after=5 30 nvidia-smi -L || true; fi
  timeout --kill-after=10 "$PROBE_S" "$PY" -m bench.gpu_kit env --out "$WORK/env.json" \
    || echo "gpu_check: could not read the machine's versions"
  interim_summary

  # 1. the cuda tests
  if ! wanted pytest; then
    record_step pytest-cuda skipped null 0 null "not in SPECPROBE_GPU_CHECK_STEPS" pytest.log
  else
    run_step pytest-cuda "$CAP_PYTEST" pytest.log \
      "$PY" -m pytest -m cuda tests/test_cuda.py -p bench.gpu_pytest -p no:cacheprovider -v -s --tb=short -rs
  fi

  # 2. the benchmark, bf16
  local data=""
  for cand in "${SPECPROBE_SMEDQA:-}" "$REPO/../shared/data/s-medqa/S-MedQA_validation.json" \
              "$REPO/shared/data/s-medqa/S-MedQA_validation.json" "$REPO/.whl/data/S-MedQA_validation.json"; do
    if [ -n "$cand" ] && [ -f "$cand" ]; then data="$cand"; break; fi
  done
  local lexicon="$REPO/.whl/data/bench-lexicon.json"
  local size device
  if (( CPU_MODE )); then
    device=(--device cpu --dtype bfloat16)
    size=(--n-texts 4 --repeats 1 --hidden 64 --layers 1 --vocab 1000 --no-vocab-scaling --patch-texts 1)
  else
    device=(--device cuda --dtype bfloat16)
    # 2 repeats, no vocabulary test: on the H100 each bench process spends about 13 s importing and 20 s in
    # all, so 3 repeats plus the vocabulary test (15 processes) did not fit the step's 200 s (bench/results-cuda.json)
    read -r -a size <<< "${SPECPROBE_GPU_BENCH_ARGS:---n-texts 64 --repeats 2 --no-vocab-scaling}"
  fi
  if ! wanted bench; then
    record_step bench skipped null 0 null "not in SPECPROBE_GPU_CHECK_STEPS" bench.log
  elif [ -z "$data" ]; then
    record_step bench skipped null 0 null "no S-MedQA data: set SPECPROBE_SMEDQA, or run bench/fetch_gpu_wheels.sh (it copies the file into .whl/data/)" bench.log
  else
    run_step bench "$CAP_BENCH" bench.log "$PY" -m bench.gpu_kit bench --lexicon "$lexicon" --cache "$WORK/bench-cache" \
      -- --data "$data" "${device[@]}" "${size[@]}" --profile --out "$OUT/bench.json"
  fi

  # 3. the llama-3.2-3b shape, where bench supports it
  if ! wanted shape; then
    record_step bench-shape skipped null 0 null "not in SPECPROBE_GPU_CHECK_STEPS" bench-shape.log
  elif (( CPU_MODE )); then
    record_step bench-shape skipped null 0 null "CPU mode: the llama-3.2-3b shape runs on a GPU only" bench-shape.log
  elif [ -z "$data" ]; then
    record_step bench-shape skipped null 0 null "no S-MedQA data" bench-shape.log
  elif grep -q -- '"--shape"' "$REPO/bench/__main__.py" 2>/dev/null; then  # not `--help`: 13 s of imports there
    run_step bench-shape "$CAP_SHAPE" bench-shape.log "$PY" -m bench.gpu_kit bench --lexicon "$lexicon" \
      --cache "$WORK/bench-cache" -- --data "$data" "${device[@]}" --shape llama-3.2-3b --repeats 1 --no-vocab-scaling \
      --out "$OUT/bench-shape.json"
  else
    record_step bench-shape skipped null 0 null "python -m bench has no --shape option (bench/__main__.py): the llama-3.2-3b shape was not run" bench-shape.log
  fi

  # 4. the summary
  "$PY" -m bench.gpu_kit summary --work "$WORK" --out-dir "$OUT" --mode "$MODE" --started "$START"
  local rc=$?
  if (( rc > 1 )) || [ ! -f "$OUT/gpu_check.json" ]; then  # the summary itself broke: still leave a JSON behind
    printf '{"kit": "specprobe bench/gpu_check.sh", "schema": 1, "mode": "%s", "status": "failed", "failures": ["the summary step failed (exit %s); see gpu_check.log"]}\n' \
      "$MODE" "$rc" > "$OUT/gpu_check.json"
    return 1
  fi
  return "$rc"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
