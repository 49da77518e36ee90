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
