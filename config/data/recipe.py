# The recipe's data (RECIPE §5): where every source of the stable and decay mixes comes from.
# Not a phase config, hence config/data/ and not config/*.py: train.py does not read it.
# `python prepare.py --recipe stable|decay|all|NAME` streams each source below, tokenizes it with
# DeepSeek-V3 and writes data/NAME/, the folders that config/stable_s1.py, stable_s2.py and
# decay_muon.py mix. The table and the reasons for each choice are in docs/RECIPE_DATA.md;
# tests/test_recipe_data.py checks the names against the configs.
#
# An entry is one call of datasets.load_dataset(path, name, split=, data_dir=, data_files=,
# revision=, streaming=True) and the record field holding the document: `text` (plain text, code)
# or `chat` (a list of {role, content} messages, rendered by prepare.render_chat with loss masks).
# `url_list` + `url_match`: the data files are the lines of that file matching the regex (Dolma
# keeps its files off the hub and lists their URLs in one file on it). `licence` and `size` are
# for people: size as each dataset card publishes it, in that card's tokenizer, not re-measured
# here. `choice` says why a release was picked where the paper names none. To use a mirror or a
# local copy, copy this file, edit the entries and pass --manifest.

# Dolma v1.7 (allenai/dolma): its file list on the hub, the files on olmo-data.org.
_DOLMA_V1_7 = "hf://datasets/allenai/dolma/urls/v1_7.txt"
_DOLMA_CHOICE = ("choice: the paper names no release; the recipe's source names (tulu-flan, megawika, "
                 "algebraic-stack, ...) are Dolma v1.7's, and 8 of these 10 stable-mix weights are "
                 "proportional to Dolma v1.7's sizes within ~15% (docs/RECIPE_DATA.md)")


def _dolma(file_prefix, size, licence, choice=_DOLMA_CHOICE):
    return dict(path="json", url_list=_DOLMA_V1_7, url_match=rf"/{file_prefix}-\d{{4}}\.json\.gz$", text="text",
                licence=f"{licence}; the collection ODC-BY", size=size, choice=choice)


sources = {
    # named by the launch scripts; the hub has one release, to which v1.4 folders were added
    # later: pin `revision` to reproduce one snapshot.
    "ultrafineweb-en": dict(path="openbmb/Ultra-FineWeb", split="en", text="content", licence="Apache-2.0",
                            size="~1T tokens"),
    "ultrafineweb-zh": dict(path="openbmb/Ultra-FineWeb", split="zh", text="content", licence="Apache-2.0",
                            size="~120B tokens"),
    "starcoder": _dolma("starcoder", "~264B tokens", "source code under permissive licences (The Stack)",
                        choice="choice: Dolma v1.7's StarCoder, one schema for all languages and not gated "
                               "(bigcode/starcoderdata, field 'content', needs per-language data_dir and a login)"),
    "reddit": _dolma("reddit", "~80B tokens", "Reddit content (Pushshift)"),
    "pes2o": _dolma("pes2o", "~57B tokens", "peS2o: ODC-BY"),
    "arxiv": _dolma("arxiv", "~28B tokens", "arXiv papers' own licences (RedPajama arXiv)"),
    "books": _dolma("books", "~5.3B tokens", "public domain (Project Gutenberg)"),
    "wiki": _dolma("wiki", "~3.7B tokens", "CC BY-SA (English Wikipedia + Wikibooks)"),
    "stackexchange": _dolma("stackexchange", "~19.6B tokens", "CC BY-SA (RedPajama StackExchange)"),
    "tulu-flan": _dolma("tulu_flan", "~16.5B tokens", "FLAN + Tulu v2 (as text, no loss mask)"),
    "algebraic-stack": _dolma("algebraic-stack-train", "~12.6B tokens", "code licences (Proof-Pile-2)"),
    "open-web-math": _dolma("open-web-math-train", "~12.6B tokens", "ODC-BY (Proof-Pile-2)"),
    "megawika": _dolma("megawika", "~4.6B tokens", "CC BY-SA (MegaWika's Wikipedia side)"),
    # two-thirds of the decay mix; the paper's SFT set is not public
    "sft-mixed": dict(path="allenai/tulu-3-sft-mixture", chat="messages",
                      licence="ODC-BY-1.0 (some subsets non-commercial)",
                      size="939k conversations, ~0.7B tokens (estimate: 2.9 GB of text)",
                      choice="choice: the nearest public general SFT mix with {role, content} messages; "
                             "the decay phase draws ~105B SFT tokens, so this is ~150 epochs of it"),
}

mixes = {
    # config/stable_s1.py (and stable_s2.py, proxy.py) data, in its order
    "stable": ["ultrafineweb-en", "ultrafineweb-zh", "starcoder", "reddit", "pes2o", "arxiv", "books", "wiki",
               "stackexchange", "tulu-flan", "algebraic-stack", "open-web-math", "megawika"],
    # config/decay_muon.py (and decay_adamw.py) data, in its order
    "decay": ["sft-mixed", "ultrafineweb-en", "ultrafineweb-zh", "starcoder", "megawika", "algebraic-stack",
              "open-web-math", "wiki", "stackexchange", "reddit", "books"],
}
