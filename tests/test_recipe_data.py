"""prepare.py --recipe: the manifest against the phase configs, and the whole streaming path on
local stand-ins (no network): a JSON-lines source found through a URL list (as Dolma's are), a
parquet code source, an Arrow chat source, all read by the real `datasets.load_dataset(...,
streaming=True)` that streams the hub. Sharding, merging, resuming, budgets and bad input."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import prepare  # noqa: E402
from prepare import PrepareError  # noqa: E402

pytest.importorskip("datasets")

WEB = [[f"Web page {f}.{r}: the quick brown fox, 第{f}页第{r}段，人民日报。" + " more words" * (r + f)
        for r in range(3)] for f in range(4)]  # 4 files: more files than the 3 parts below
CODE = [f"def f{i}(x):\n    return x * {i}  # snippet {i}\n" + "    pass\n" * i for i in range(7)]  # 1 file
CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{i}+{i}?"},
          {"role": "assistant", "content": f"{2 * i}."}, {"role": "user", "content": "Sure?"},
          {"role": "assistant", "content": "Yes."}] for i in range(4)]


@pytest.fixture(scope="module")
def tok():
    return prepare.load_tokenizer("deepseek-v3")


@pytest.fixture
def standins(tmp_path):
    """Files in three formats plus a manifest in config/data/recipe.py's format pointing at them."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = tmp_path / "src"
    src.mkdir()
    web_files = []
    for f, docs in enumerate(WEB):
        web_files.append(src / f"web-{f}.jsonl")
        web_files[-1].write_text("".join(json.dumps({"id": f"{f}-{r}", "text": d}, ensure_ascii=False) + "\n"
                                         for r, d in enumerate(docs)), encoding="utf-8")
    # a URL list as Dolma's urls/v1_7.txt: one line per data file, other sources' lines mixed in
    (src / "urls.txt").write_text("\n".join([str(src / "other-0.jsonl")] + [str(p) for p in web_files]) + "\n")
    pq.write_table(pa.table({"content": CODE, "stars": list(range(len(CODE)))}), src / "code.parquet")
    datasets.Dataset.from_list([{"messages": m} for m in CHATS]).save_to_disk(str(src / "chat"))
    manifest = tmp_path / "manifest.py"
    manifest.write_text(f"""
sources = {{
    "web": dict(path="json", url_list={str(src / 'urls.txt')!r}, url_match=r"/web-\\d+\\.jsonl$", text="text",
                licence="test", size="12 documents"),
    "code": dict(path="parquet", data_files=({str(src / 'code.parquet')!r},), text="content", licence="test",
                 size="7 snippets"),
    "chat": dict(path="arrow", data_files={str(next((src / 'chat').glob('*.arrow')))!r}, chat="messages",
                 licence="test", size="4 conversations"),
}}
mixes = {{"stable": ["web", "code"], "decay": ["chat", "web"]}}
""")
    return manifest


def build(manifest, root, targets=("stable",), tok=None, **kw):
    kw.setdefault("val_fraction", 0.25)
    logs = []
    result = prepare.prepare_recipe(list(targets), root, manifest=manifest, tokenizer=tok or "deepseek-v3",
                                    progress=False, log=logs.append, **kw)
    return result, logs


def documents(folder, tok):
    """Every document of a dataset folder (train and val), decoded, in shard order."""
    meta = json.loads((Path(folder) / "meta.json").read_text())
    docs = []
    for split in meta["splits"].values():
        if not split["shards"]:
            continue
        ids = np.concatenate([np.fromfile(Path(folder) / s["file"], dtype=meta["dtype"]) for s in split["shards"]])
        cuts = np.flatnonzero(ids == tok.eos_id)
        docs += [tok.decode(ids[a + 1:b]) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]
    return docs


def run_main(args, capsys):
    rc = prepare.main(args)
    return rc, capsys.readouterr().err.strip().splitlines()


# ----------------------------------------------------------------------------- the manifest

def test_manifest_folders_equal_the_data_folders_of_every_phase_config():
    # (config/proxy.py trains on the proxy corpus, docs/CORPUS.md; its stable mix is commented out)
    import train
    sources, mixes = prepare.load_manifest()
    uses = {"stable": ["stable_s1", "stable_s2"], "decay": ["decay_muon", "decay_adamw"]}
    for mix, configs in uses.items():
        for name in configs:
            cfg = train.load_config(str(ROOT / "config" / f"{name}.py"))
            assert set(cfg.data) == {f"data/{s}" for s in mixes[mix]}, name
    assert len(mixes["stable"]) == 13 and len(mixes["decay"]) == 11  # RECIPE §5
    assert set(sources) == set(mixes["stable"]) | set(mixes["decay"])
    for name, spec in sources.items():
        assert spec["licence"] and spec["size"], name
        # a release the paper does not name is marked as a choice (Ultra-FineWeb is named)
        assert name.startswith("ultrafineweb") or spec["choice"].startswith("choice:"), name
    assert "chat" in sources["sft-mixed"] and all("text" in s for n, s in sources.items() if n != "sft-mixed")


@pytest.mark.parametrize("entry, message", [
    ('dict(path="json", text="text", chat="messages")', "give exactly one of text=FIELD"),
    ('dict(path="json", txt="text")', "unknown key 'txt' (did you mean 'text'?)"),
    ('dict(path="json", text="text", url_list="u.txt")', "url_list and url_match go together"),
])
def test_manifest_mistakes_are_named_before_any_work(tmp_path, entry, message):
    (tmp_path / "m.py").write_text(f"sources = {{'web': {entry}}}\nmixes = {{'stable': ['web']}}\n")
    with pytest.raises(PrepareError) as e:
        prepare.load_manifest(tmp_path / "m.py")
    assert f"source 'web': {message}" in str(e.value)


# ----------------------------------------------------------------------------- the streaming path

def test_text_code_and_chat_stand_ins_stream_into_their_folders(standins, tmp_path, tok):
    result, _ = build(standins, tmp_path / "data", ["all"], tok, val_fraction=0.0)
    assert set(result) == {"web", "code", "chat"} and all(result.values())
    assert documents(tmp_path / "data" / "web", tok) == [d for docs in WEB for d in docs]  # url_match skipped 'other'
    assert documents(tmp_path / "data" / "code", tok) == CODE  # code round-trips byte for byte
    # chat: through the SFT renderer, loss mask 1 exactly on the assistant replies and their EOS
    chat = tmp_path / "data" / "chat"
    meta = prepare.verify_dataset(chat, full=True)
    assert meta["has_loss_mask"] and not result["web"]["has_loss_mask"]
    shard = meta["splits"]["train"]["shards"]
    ids = np.concatenate([np.fromfile(chat / s["file"], dtype=meta["dtype"]) for s in shard])
    mask = np.concatenate([np.fromfile(chat / s["mask_file"], dtype=np.uint8) for s in shard])
    expected = [prepare.encode_chat(tok, m) for m in CHATS]
    assert ids.tolist() == sum((e[0] for e in expected), []) and mask.tolist() == sum((e[1] for e in expected), [])
    # the folders are what train.py opens: one mixture over all three
    mix = prepare.Mixture({str(tmp_path / "data" / n): 1.0 for n in result}, "train", 16, seed=0)
    x, y, m = mix.get_batch(step=0, rank=0, micro_step=0, batch_size=8)
    assert x.shape == (8, 16) and m is not None


@pytest.mark.parametrize("source, n_files", [("web", 4), ("code", 1)])
def test_shard_slices_are_disjoint_their_union_is_the_whole_and_they_merge(standins, tmp_path, tok, source,
                                                                         n_files, capsys):
    # web: 4 files over 3 parts (cut by files); code: 1 file, so every part keeps records r % 3 == i
    whole, _ = build(standins, tmp_path / "whole", [source], tok)
    parts = []
    for i in range(3):  # three machines, three disks
        result, _ = build(standins, tmp_path / f"machine{i}", [source], tok, shard=f"{i}/3")
        assert result[source] is None  # the other parts are elsewhere
        parts.append(documents(tmp_path / f"machine{i}" / source / f"part-{i:05d}-of-00003", tok))
    assert all(parts)
    flat = [d for p in parts for d in p]
    assert len(set(flat)) == len(flat)  # disjoint
    assert sorted(flat) == sorted(documents(tmp_path / "whole" / source, tok))  # union = the whole
    for i in range(3):  # gather the parts into one folder and join them
        shutil.copytree(tmp_path / f"machine{i}" / source, tmp_path / "data" / source, dirs_exist_ok=True)
    assert run_main(["--recipe", source, "--merge", "--manifest", str(standins), "--out", str(tmp_path / "data"),
                     "--quiet"], capsys) == (0, [])
    merged = prepare.verify_dataset(tmp_path / "data" / source, full=True)
    total = lambda m: sum(s["tokens"] for s in m["splits"].values())  # noqa: E731 (val: document 0 of each file)
    assert total(merged) == total(whole[source]) and merged["splits"]["val"]["tokens"] > 0
    assert sorted(documents(tmp_path / "data" / source, tok)) == sorted(flat)
    assert merged["recipe"]["stream_files"] == n_files
    assert prepare.load_tokenizer(tmp_path / "data" / source).eos_id == 1  # tokenizer.json at the top too


def test_last_part_to_finish_merges_on_a_shared_folder_and_merge_names_missing_parts(standins, tmp_path, tok):
    root = tmp_path / "data"
    assert build(standins, root, ["web"], tok, shard="2/3")[0]["web"] is None
    with pytest.raises(PrepareError, match=r"2 of 3 parts are missing.*part-00000-of-00003.*--shard I/3"):
        build(standins, root, ["web"], tok, merge_only=True)
    assert build(standins, root, ["web"], tok, shard="0/3")[0]["web"] is None
    result, logs = build(standins, root, ["web"], tok, shard="1/3")
    assert result["web"]["recipe"]["shard_count"] == 3 and (root / "web" / "meta.json").exists()
    assert any("merged 3 part(s)" in line for line in logs)


@pytest.mark.parametrize("source, dies_in, finished", [
    ("web", 3, ["file-000000", "file-000001"]),  # 4 files: resumes at the third
    ("code", 1, []),  # 1 file, listed as a tuple in the manifest: the plan must read back equal
])
def test_interrupted_run_resumes_at_the_last_finished_file_and_matches_a_clean_run(standins, tmp_path, tok,
                                                                                  monkeypatch, source, dies_in,
                                                                                  finished):
    clean, _ = build(standins, tmp_path / "clean", [source], tok)
    real_prepare, built, fired = prepare.prepare, [], []

    def dies_in_one_file(inputs, out, *a, **kw):
        built.append(Path(out).name)
        if len(built) == dies_in and not fired:
            fired.append(True)
            docs = kw["documents"]

            def killed(stats):
                yield next(docs(stats))
                raise KeyboardInterrupt  # as a Ctrl-C or a SIGTERM'd job: mid-file, shards half written
            kw["documents"] = killed
        return real_prepare(inputs, out, *a, **kw)

    monkeypatch.setattr(prepare, "prepare", dies_in_one_file)
    with pytest.raises(KeyboardInterrupt):
        build(standins, tmp_path / "data", [source], tok)
    part = tmp_path / "data" / source / "part-00000-of-00001"
    assert sorted(p.name for p in part.iterdir()) == finished + ["plan.json"]  # no debris
    assert not (tmp_path / "data" / source / "meta.json").exists()
    built.clear()
    resumed, _ = build(standins, tmp_path / "data", [source], tok)
    n_files = len(WEB) if source == "web" else 1
    assert built == [f"file-{k:06d}" for k in range(len(finished), n_files)]  # finished files are not read again
    strip = lambda m: [(s["tokens"], s["sha256"]) for sp in m["splits"].values() for s in sp["shards"]]  # noqa: E731
    assert strip(resumed[source]) == strip(clean[source])


def test_rerun_is_a_noop_that_opens_no_stream(standins, tmp_path, tok, monkeypatch):
    import datasets
    build(standins, tmp_path / "data", ["stable"], tok)
    metas = {p: p.read_bytes() for p in (tmp_path / "data").rglob("meta.json")}
    opened, built = [], []
    real_load, real_prepare = datasets.load_dataset, prepare.prepare
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: opened.append(a) or real_load(*a, **kw))
    monkeypatch.setattr(prepare, "prepare", lambda *a, **kw: built.append(a) or real_prepare(*a, **kw))
    result, logs = build(standins, tmp_path / "data", ["stable"], tok)
    assert opened == [] and built == [] and all(result.values())
    assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("meta.json")} == metas
    assert sum("up to date" in line for line in logs) == 2


def test_max_tokens_is_a_budget_per_source_split_over_parts_and_a_change_needs_force(standins, tmp_path, tok):
    doc_tokens = [len(tok.encode(d)) + 1 for docs in WEB for d in docs]
    budget = 60
    for i in range(2):
        result, _ = build(standins, tmp_path / "data", ["web"], tok, shard=f"{i}/2", max_tokens=budget,
                          val_fraction=0.0)
        part = json.loads((tmp_path / "data" / "web" / f"part-{i:05d}-of-00002" / "meta.json").read_text())
        got = part["splits"]["train"]["tokens"]
        assert budget // 2 <= got < budget // 2 + max(doc_tokens)  # stops at the first document past it
    assert result["web"]["splits"]["train"]["tokens"] < sum(doc_tokens)
    with pytest.raises(PrepareError, match=r"other settings \(max_tokens: 60 -> None.*--force"):
        build(standins, tmp_path / "data", ["web"], tok, shard="0/2", val_fraction=0.0)
    build(standins, tmp_path / "data", ["web"], tok, shard="0/2", val_fraction=0.0, force=True)
    assert not (tmp_path / "data" / "web" / "meta.json").exists()  # part 1 is still the old sample
    with pytest.raises(PrepareError, match=r"different settings.*part-00001-of-00002.*--force"):
        build(standins, tmp_path / "data", ["web"], tok, merge_only=True)
    full, _ = build(standins, tmp_path / "data", ["web"], tok, shard="1/2", val_fraction=0.0, force=True)
    assert full["web"]["splits"]["train"]["tokens"] == sum(doc_tokens)


def test_prepare_max_tokens_stops_at_the_first_document_boundary_past_the_budget(tmp_path, tok):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in CODE))
    lengths = np.cumsum([len(tok.encode(d)) + 1 for d in CODE])
    meta = prepare.prepare([str(tmp_path / "d.jsonl")], tmp_path / "ds", tok, val_fraction=0.0, max_tokens=30,
                           progress=False, log=lambda *_: None)
    assert meta["splits"]["train"]["tokens"] == lengths[np.searchsorted(lengths, 30)]
    assert meta["options"]["max_tokens"] == 30
    assert prepare.main(["--input", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "cli"), "--val-fraction", "0",
                         "--max-tokens", "30", "--quiet"]) == 0
    assert prepare.verify_dataset(tmp_path / "cli")["splits"]["train"]["tokens"] == meta["splits"]["train"]["tokens"]


# ----------------------------------------------------------------------------- bad input: one line, nothing written

def test_missing_field_names_the_source_record_and_fix_before_anything_is_written(standins, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(standins.read_text().replace('text="content"', 'text="body"'))
    rc, err = run_main(["--recipe", "code", "--manifest", str(bad), "--out", str(tmp_path / "data")], capsys)
    assert rc == 1 and len(err) == 1
    assert "source 'code'" in err[0] and "record 1 has no field 'body'" in err[0] and "'content'" in err[0]
    assert "set the source's text field in" in err[0]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, message", [
    (["--recipe", "stabel"], "unknown source 'stabel' (did you mean 'stable'?): --recipe takes all, stable"),
    (["--recipe", "web", "--shard", "3/3"], "--shard 3/3: expected I/N with 0 <= I < N"),
    (["--recipe", "web", "--max-tokens", "0"], "--max-tokens 0: give a positive number"),
    (["--recipe", "web", "--merge"], "no part folders to merge; build them with --recipe web --shard I/N"),
])
def test_bad_recipe_arguments_are_one_line_errors(standins, tmp_path, capsys, args, message):
    rc, err = run_main(args + ["--manifest", str(standins), "--out", str(tmp_path / "data")], capsys)
    assert rc == 1 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "data").exists()


def test_a_stream_that_cannot_open_names_the_source_and_the_fix(standins, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(standins.read_text().replace("code.parquet", "gone.parquet"))
    rc, err = run_main(["--recipe", "code", "--manifest", str(bad), "--out", str(tmp_path / "data")], capsys)
    assert rc == 1 and len(err) == 1
    assert "source 'code': cannot stream parquet" in err[0] and "entry in the manifest" in err[0]


def test_without_the_datasets_package_the_error_names_the_pip_command(standins, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    rc, err = run_main(["--recipe", "web", "--manifest", str(standins), "--out", str(tmp_path / "data")], capsys)
    assert rc == 1 and err == ["prepare.py: error: --recipe streams its sources through the Hugging Face "
                               "`datasets` package, which is not installed: pip install datasets==5.2.0"]
