#!/usr/bin/env bash
# TransformerEngine onto a GPU machine that has no network and takes at most ~64 MiB per
# command: the core wheel (171 MiB) travels in parts over consecutive commands while the
# machine stays up, and the PyTorch binding (a source distribution) is compiled there.
#
#   here:   bash gpu_tests/te_carry.sh fetch        # .te/p1 ... .te/p4 (<= 45 MiB each), .te/small
#   there:  bash gpu_tests/te_carry.sh stash        # one command per part, carrying .te/pN
#   there:  bash gpu_tests/te_carry.sh install      # carrying .te/small: reassemble, check, build
#           export PYTHONPATH=/tmp/te_site          # then fp8_backend="te" imports
#
# Versions: TE 2.11.0 for CUDA 13 (the machines run torch 2.11+cu130, nvcc 13, cuDNN for CUDA 13).
set -euo pipefail
VERSION=2.11.0
WHEEL=transformer_engine_cu13-$VERSION-py3-none-manylinux_2_28_x86_64.whl
STASH=/tmp/te_parts
SITE=/tmp/te_site

case "${1:-}" in
fetch)
  rm -rf .te && mkdir -p .te/small .te/download
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .te/download transformer-engine-cu13==$VERSION transformer-engine==$VERSION \
    pydantic pydantic-core annotated-types typing-inspection importlib-metadata
  # the binding is published as an sdist only; pip cannot download it without building it
  url=$(curl -s https://pypi.org/simple/transformer-engine-torch/ \
        | grep -o "https://[^\"#]*transformer_engine_torch-$VERSION.tar.gz" | head -1)
  curl -s -o .te/small/transformer_engine_torch-$VERSION.tar.gz "$url"
  mv .te/download/*.whl .te/small/ && mv .te/small/$WHEEL .te/download/
  sha256sum .te/download/$WHEEL | cut -d' ' -f1 > .te/small/core.sha256
  # 45 MiB: a call carries the working tree too (~7 MB), and 60 MiB parts stopped fitting
  (cd .te/download && split -b 45M -d -a 1 $WHEEL part.)
  n=0; for p in .te/download/part.*; do n=$((n + 1)); mkdir -p .te/p$n; mv "$p" .te/p$n/; done
  rm -rf .te/download
  du -sh .te/*
  parts=(.te/p*); parts[-1]+=",.te/small"  # the last part and the small files travel together
  bash gpu_tests/carry_fits.sh "${parts[@]}"
  ;;
stash)
  mkdir -p $STASH && cp .te/p*/part.* $STASH/ && ls -la $STASH
  ;;
install)
  rm -rf $SITE /tmp/te_bind
  cat $STASH/part.* > /tmp/$WHEEL
  [ "$(sha256sum /tmp/$WHEEL | cut -d' ' -f1)" = "$(cat .te/small/core.sha256)" ] \
    || { echo "core wheel checksum differs: a part is missing; stash every part first" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE /tmp/$WHEEL .te/small/*.whl
  export PYTHONPATH=$SITE:${PYTHONPATH:-}
  # The binding compiles against the installed torch (~2.5 min on 16 cores); NVTE_FRAMEWORK
  # selects it. Its wheel puts the .so in transformer_engine/wheel_lib/, a folder the core
  # wheel already made, and pip --target skips top-level folders that exist: so it goes to
  # a folder of its own first and is merged into $SITE after.
  NVTE_FRAMEWORK=pytorch MAX_JOBS=16 python3 -m pip install -q --no-index --no-deps --no-build-isolation \
    --target /tmp/te_bind .te/small/transformer_engine_torch-$VERSION.tar.gz
  cp -r /tmp/te_bind/. $SITE/
  ls $SITE/transformer_engine/wheel_lib/
  python3 -c "import transformer_engine.pytorch as te; print('TE', te.__version__ if hasattr(te, '__version__') else '', 'imports')"
  ;;
*)
  sed -n 2,11p "$0"; exit 2
  ;;
esac
