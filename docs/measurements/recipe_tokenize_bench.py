"""Tokenization throughput of `prepare.py --recipe` with DeepSeek-V3 per kind of source (English
web-like text, Chinese news, Python code), on local JSON-lines stand-ins streamed through
datasets.load_dataset: the hub path without the network. Prints, per kind, the raw `tokenizers`
batch encode (the ceiling) and --recipe end to end (stream, render, encode, write, fsync, sha256),
as tokens per wall-clock second and per CPU-second (all threads of the process).

    taskset -c 0 python docs/measurements/recipe_tokenize_bench.py /tmp/rbench     # one core
    taskset -c 0,1 python docs/measurements/recipe_tokenize_bench.py /tmp/rbench   # two cores
"""
import glob
import json
import os
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import prepare  # noqa: E402

out = Path(sys.argv[1])
src = out / "src"
src.mkdir(parents=True, exist_ok=True)
en = []  # Shakespeare cut into web-page sized documents (~4 KB)
for f in prepare.shakespeare_files():
    doc = ""
    for para in Path(f).read_text(encoding="utf-8", errors="replace").split("\n\n"):
        doc += para + "\n\n"
        if len(doc) > 4000:
            en.append(doc)
            doc = ""
zh = list(prepare.peoples_daily_documents(prepare.peoples_daily_file()))
code = [Path(p).read_text(encoding="utf-8", errors="replace") for p in
        sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"), recursive=True))]
code = [c for c in code if c.strip()][:3000]
# ~25-30 MB per kind in 2 files, so a file's fixed costs amortize as on the hub's ~GB files
kinds = {"en": en * 5, "zh": zh * 4, "code": code}
for name, docs in kinds.items():
    for f in range(2):
        with open(src / f"{name}-{f}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs[f::2])
(out / "manifest.py").write_text("sources = {\n" + "".join(
    f"    {n!r}: dict(path='json', data_files={sorted(str(p) for p in src.glob(n + '-*.jsonl'))!r}, "
    f"text='text', licence='-', size='-'),\n" for n in kinds) + "}\nmixes = {}\n")
tok = prepare.load_tokenizer("deepseek-v3")
quiet = dict(manifest=out / "manifest.py", tokenizer=tok, progress=False, log=lambda *_: None)
prepare.prepare_recipe(["code"], out / "warmup", max_tokens=1000, **quiet)  # imports datasets, first stream
print(f"{prepare.num_cores()} core(s), load average {os.getloadavg()}")
for name, docs in kinds.items():
    mb = sum(len(d.encode()) for d in docs) / 1e6
    t, c = time.perf_counter(), time.process_time()
    n_raw = sum(len(e.ids) + 1 for e in tok.backend.encode_batch_fast(docs, add_special_tokens=False))
    raw_wall, raw_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    res = prepare.prepare_recipe([name], out / "data", force=True, **quiet)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = sum(s["tokens"] for s in res[name]["splits"].values())
    assert n == n_raw, (n, n_raw)  # the same documents, each + EOS
    print(f"{name:4s} {len(docs):5d} docs {mb:5.1f} MB {n / 1e6:5.2f}M tokens ({mb * 1e6 / n:.2f} bytes/token) | "
          f"raw {n / raw_wall / 1e6:.2f}M tokens/s wall, {n / raw_cpu / 1e6:.2f}M per CPU-s | "
          f"--recipe {n / wall / 1e6:.2f}M tokens/s wall, {n / cpu / 1e6:.2f}M per CPU-s")
print(f"load average after: {os.getloadavg()}")
