#!/usr/bin/env bash
# Fetch, into .whl/ (git-ignored), what bench/gpu_check.sh needs on a GPU machine that has no network:
#   .whl/*.whl   the wheels of every distribution the GPU path imports that the machine's image lacks
#                (`python -m bench.gpu_kit wheels` lists them, at the versions installed here), for
#                CPython 3.12 manylinux x86-64, and bitsandbytes (the 4-bit QLoRA test) if the whole
#                carry stays under the 64 MiB limit (working tree + .whl); else that test skips, saying why
#   .whl/data/   the S-MedQA file and the benchmark's term lexicon built from it here (building it needs
#                spacy and scispacy, about 60 MB of wheels: too much to carry, and only the lexicon is needed)
# Run it here (PyPI reachable, the dev venv installed), then on the GPU machine: bash bench/gpu_check.sh
# with carry [".whl"]. See docs/gpu.md.
# Environment: PYTHON (default .venv/bin/python, else python3), BNB_VERSION (default 0.50.2: has CUDA 13 kernels),
# SPECPROBE_SMEDQA (default ../shared/data/s-medqa/S-MedQA_validation.json), CARRY_LIMIT_MIB (default 64).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY=python3; fi
DEST="$REPO/.whl"
BNB_VERSION="${BNB_VERSION:-0.50.2}"
LIMIT_MIB="${CARRY_LIMIT_MIB:-64}"
MARGIN_MIB=1  # room for what changes in the tree before the run (a results file, a doc edit)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# pip matches manylinux tags exactly: name every glibc level the GPU image (glibc >= 2.28) runs
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64)
download() {  # dir requirement...
  local dir="$1"; shift
  "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" --no-deps -d "$dir" "$@"
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
bytes_of() { if [ "$#" -gt 0 ]; then stat -c %s "$@" | awk '{ s += $1 } END { print s + 0 }'; else echo 0; fi; }
tree_bytes() {  # what travels besides .whl: tracked files and untracked files git does not ignore
  git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}

mkdir -p "$DEST/data"
rm -f "$DEST"/*.whl

# 1. what the GPU path imports beyond the image
echo "== distributions the GPU path imports beyond the GPU image"
if ! WHEELS_LIST="$("$PY" -m bench.gpu_kit wheels)"; then  # a failed search is no "none needed"
  echo "error: could not list the distributions the GPU path needs (python -m bench.gpu_kit wheels failed)" >&2
  exit 1
fi
NEEDED=()
while IFS= read -r line; do [ -n "$line" ] && NEEDED+=("$line"); done <<< "$WHEELS_LIST"
if (( ${#NEEDED[@]} )); then
  printf '   %s\n' "${NEEDED[@]}"
  download "$DEST" "${NEEDED[@]}"
else
  echo "   none"
fi

# 2. data for the benchmark
DATA="${SPECPROBE_SMEDQA:-$REPO/../shared/data/s-medqa/S-MedQA_validation.json}"
echo "== benchmark data"
if [ -f "$DATA" ]; then
  install -m 0644 "$DATA" "$DEST/data/S-MedQA_validation.json"  # a writable copy, whatever the source's mode
  "$PY" -m bench.gpu_kit lexicon --data "$DATA" --out "$DEST/data/bench-lexicon.json"
else
  echo "   warning: no S-MedQA file at $DATA (set SPECPROBE_SMEDQA): the GPU run will skip the benchmark"
fi

# 3. bitsandbytes, if the carry stays under the limit
echo "== bitsandbytes $BNB_VERSION (4-bit QLoRA test)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if download "$TMP" "bitsandbytes==$BNB_VERSION"; then
  shopt -s nullglob
  have=("$DEST"/*.whl "$DEST"/data/*)
  bnb=("$TMP"/*.whl)
  shopt -u nullglob
  total=$(( $(tree_bytes) + $(bytes_of "${have[@]}") + $(bytes_of "${bnb[@]}") ))
  if (( total <= (LIMIT_MIB - MARGIN_MIB) * 1048576 )); then
    mv "${bnb[@]}" "$DEST/"
    echo "   carried: the carry would be $(mib "$total") MiB of ${LIMIT_MIB} MiB"
  else
    echo "   NOT carried: the carry would be $(mib "$total") MiB, over ${LIMIT_MIB} MiB less ${MARGIN_MIB} MiB of margin;"
    echo "   the QLoRA test will skip (bitsandbytes is not importable)"
  fi
else
  echo "   could not download it: the QLoRA test will skip"
fi

# 4. what will travel
shopt -s nullglob
files=("$DEST"/*.whl "$DEST"/data/*)
shopt -u nullglob
echo "== .whl/"
for f in "${files[@]}"; do printf '   %8s MiB  %s\n' "$(mib "$(stat -c %s "$f")")" "${f#"$REPO"/}"; done
whl=$(bytes_of "${files[@]}")
tree=$(tree_bytes)
echo "   .whl total $(mib "$whl") MiB; working tree $(mib "$tree") MiB; carry total $(mib $(( whl + tree ))) MiB (limit ${LIMIT_MIB} MiB)"
if (( whl + tree > LIMIT_MIB * 1048576 )); then
  echo "error: over the carry limit" >&2
  exit 1
fi
