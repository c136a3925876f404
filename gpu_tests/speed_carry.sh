#!/usr/bin/env bash
# The optional fused-loss packages as wheels for a GPU machine without network (bash here, in the
# repository root): liger-kernel and cut-cross-entropy, both pure Python (py3-none-any, < 1 MiB
# together). Their only runtime needs are torch and triton, which the GPU image has; the script
# prints each wheel's Requires-Dist (extras dropped) so that stays checked.
#
#   bash gpu_tests/speed_carry.sh             # here: .whl/speed/ (ignored by git; name it in carry)
#   there: bash gpu_tests/speed_run.sh        # installs .whl/speed/*.whl into /tmp/site first
set -euo pipefail
PINS=(liger-kernel==0.8.5 cut-cross-entropy==25.1.1)  # the versions model.LOSS_IMPLS names
PYTHON=${PYTHON:-python3}
rm -rf .whl/speed && mkdir -p .whl/speed  # only its own folder: .whl/ holds the corpus parts too
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl/speed "${PINS[@]}"
for w in .whl/speed/*.whl; do
  echo "$(basename "$w") ($(du -k "$w" | cut -f1) KiB) needs:"
  unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^/  /'
done
