"""sample.py (decoding) and convert_hf.py (Hugging Face export/import)."""
import json
import shutil
from dataclasses import asdict

import pytest
import torch

from checkpoint import load_model, load_model_and_tokenizer, write_model
from model import Xmodel, model_config
from sample import generate, generate_text, main as sample_main, sample_next, top_k_mask, top_p_mask

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. "
        "天下大势，分久必合，合久必分。") * 4


def make_tokenizer(path):
    """A byte-level BPE (vocab 320, EOS '<|endoftext|>' = 0), trained in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


def write_checkpoint(root, model, tokenizer_json):
    """A run dir laid out as train.py writes it (checkpoint.py's format) -> run dir."""
    from prepare import load_tokenizer
    step = root / "run" / "ckpt" / "step_00000010"
    step.mkdir(parents=True)
    torch.save({"model_config": asdict(model.config), "model": model.state_dict(),
                "tokenizer": load_tokenizer(str(tokenizer_json)).meta(), "step": 10, "config": {}},
               step / "model.pt")
    shutil.copyfile(tokenizer_json, step / "tokenizer.json")
    (root / "run" / "ckpt" / "latest").write_text("step_00000010\n")
    return root / "run"


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Xmodel(model_config("tiny", **overrides)).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    # µP with every multiplier non-trivial, so a missed fold shows up in the logits
    model = tiny_model(input_scale=3.0, output_scale=2.0, residual_scale=1.7)
    return write_checkpoint(root, model, make_tokenizer(root / "tokenizer.json"))


# ---- masks -----------------------------------------------------------------------------

def test_top_k_mask_keeps_the_k_largest_logits():
    logits = torch.tensor([[1.0, 5.0, 3.0, 2.0], [0.0, -1.0, 4.0, 4.5]])
    out = top_k_mask(logits, 2)
    inf = float("-inf")
    assert torch.equal(out, torch.tensor([[inf, 5.0, 3.0, inf], [inf, inf, 4.0, 4.5]]))
    assert torch.equal(top_k_mask(logits, None), logits) and torch.equal(top_k_mask(logits, 4), logits)


def test_top_p_mask_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05 (unsorted on purpose)
    logits = probs.log()[None]
    kept = lambda p: torch.isfinite(top_p_mask(logits, p))[0].tolist()
    assert kept(0.4) == [False, True, False, False]   # the top token alone reaches 0.4
    assert kept(0.7) == [False, True, False, True]    # 0.5 + 0.3
    assert kept(0.9) == [False, True, True, True]     # 0.5 + 0.3 + 0.15
    assert kept(1e-6) == [False, True, False, False]  # the top token always survives
    assert kept(1.0) == [True] * 4
    assert torch.equal(top_p_mask(logits, 0.7)[0, [1, 3]], logits[0, [1, 3]])  # values untouched


def test_sample_next_is_argmax_at_temperature_zero_or_top_k_one():
    logits = torch.randn(3, 50)
    assert torch.equal(sample_next(logits, 0.0), logits.argmax(-1, keepdim=True))
    assert torch.equal(sample_next(logits, 1.0, top_k=1), logits.argmax(-1, keepdim=True))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits[:1], 1.0, top_k=3, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) <= set(logits[0].topk(3).indices.tolist())


# ---- decoding --------------------------------------------------------------------------

def test_kv_cache_decoding_equals_greedy_decoding_without_cache():
    model = tiny_model()
    idx = torch.randint(0, model.config.vocab_size, (2, 7))
    cached = generate(model, idx, 20, temperature=0.0, use_cache=True)
    uncached = generate(model, idx, 20, temperature=0.0, use_cache=False)
    assert cached.shape == (2, 27) and torch.equal(cached, uncached)
    # the cached logits themselves match a full forward pass
    cache = model.new_kv_cache(2, 27)
    with torch.no_grad():
        step_logits = torch.cat([model(cached[:, :7], kv_cache=cache)] +
                                [model(cached[:, t:t + 1], kv_cache=cache) for t in range(7, 27)], 1)
        assert torch.allclose(step_logits, model(cached), atol=1e-5)


def test_kv_cache_sampling_equals_sampling_without_cache_for_one_seed():
    model = tiny_model()
    idx = torch.randint(0, model.config.vocab_size, (3, 5))
    runs = [generate(model, idx, 16, temperature=1.0, top_k=50, top_p=0.9, use_cache=c,
                     generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(*runs)


def test_generation_stops_at_eos_and_pads_finished_rows():
    model = tiny_model()
    idx = torch.randint(0, model.config.vocab_size, (1, 5))
    free = generate(model, idx, 12, temperature=0.0)
    eos = free[0, 5 + 3].item()  # pretend the 4th generated token is EOS
    first = (free[0, 5:] == eos).nonzero()[0].item()
    stopped = generate(model, idx, 12, temperature=0.0, eos_id=eos)
    assert stopped.shape[1] == 5 + first + 1 and stopped[0, -1].item() == eos
    # two rows: the one that ends early is padded with EOS while the other continues
    other = torch.randint(0, model.config.vocab_size, (1, 5))
    both = generate(model, torch.cat([idx, other]), 12, temperature=0.0, eos_id=eos)
    assert torch.equal(both[0, :5 + first + 1], stopped[0])
    assert (both[0, 5 + first + 1:] == eos).all()


def test_generate_text_stops_at_a_stop_string(run_dir):
    model, tok, _ = load_model_and_tokenizer(run_dir)
    prompt = tok.encode("To be, or not")
    (free, free_ids), = generate_text(model, tok, prompt, 40, temperature=0.0)
    assert len(free) > 12
    stop = free[8:12]  # a string the model is known to produce
    (text, ids), = generate_text(model, tok, prompt, 40, temperature=0.0, stop=[stop, "never-seen"])
    assert text == free[:free.index(stop)] and stop not in text
    assert len(ids) < len(free_ids)  # generation stopped early, not just the text cut


def test_sample_cli_prints_samples_and_tokens_per_second(run_dir, capsys):
    sample_main([str(run_dir), "--prompt", "To be", "--num-samples", "2", "--max-new-tokens", "8",
                 "--device", "cpu", "--stop", "never-seen"])
    out = capsys.readouterr().out
    assert "tokens/s" in out and out.count("To be") >= 2


# ---- Hugging Face interchange ----------------------------------------------------------

def test_export_matches_transformers_llama_logits(run_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from convert_hf import export_hf
    out = export_hf(run_dir, tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False  # input ×3 and output ×2/width_mult differ
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    model = load_model(run_dir).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 40))  # 40 < 64: the tiny max_seq_len
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert ours.abs().max() > 1.0  # a non-degenerate comparison
    assert (ours - theirs).abs().max().item() < 1e-4
    # the exported tokenizer is the checkpoint's, loadable with AutoTokenizer
    _, tok, _ = load_model_and_tokenizer(run_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.encode(TEXT[:200], add_special_tokens=False) == tok.encode(TEXT[:200])
    assert hf_tok.eos_token_id == tok.eos_id == cfg["eos_token_id"]


def test_export_of_a_standard_parameterization_model_stays_tied(tmp_path):
    pytest.importorskip("transformers")
    from convert_hf import export_hf
    from safetensors.torch import load_file
    run = write_checkpoint(tmp_path, tiny_model(mup=False), make_tokenizer(tmp_path / "tok.json"))
    out = export_hf(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert "lm_head.weight" not in load_file(out / "model.safetensors")


def test_export_then_import_restores_the_original_model(run_dir, tmp_path):
    from convert_hf import export_hf, import_hf
    model = load_model(run_dir).eval()
    back = import_hf(export_hf(run_dir, tmp_path / "hf"))
    assert back.config == model.config
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), name
    reloaded = load_model(write_model(back, tmp_path / "imported"))
    assert reloaded.config == model.config


def _random_llama(tmp_path, tied):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=tied, initializer_range=0.1)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so a mis-mapped norm shows up
        for n, p in hf.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(tmp_path / "llama")
    return hf, tmp_path / "llama"


def test_import_of_a_transformers_llama_matches_its_logits(tmp_path):
    from convert_hf import import_hf
    hf, path = _random_llama(tmp_path, tied=True)
    model = import_hf(path)
    assert model.config.mup is False and model.config.n_kv_head == 2
    idx = torch.randint(0, 300, (2, 50))
    with torch.no_grad():
        diff = (model(idx) - hf(idx).logits).abs().max().item()
    assert diff < 1e-4


def test_import_of_an_untied_transformers_llama_matches_its_logits(tmp_path):
    from convert_hf import import_hf
    hf, path = _random_llama(tmp_path, tied=False)
    model = import_hf(path)
    assert model.config.tie_embeddings is False
    assert torch.equal(model.lm_head.weight, hf.lm_head.weight)
    assert not torch.equal(model.lm_head.weight, model.embed.weight)
    idx = torch.randint(0, 300, (2, 50))
    with torch.no_grad():
        hf_logits = hf(idx).logits
        assert (model(idx) - hf_logits).abs().max().item() < 1e-4
        reloaded = load_model(write_model(model, tmp_path / "imported")).eval()
        assert (reloaded(idx) - hf_logits).abs().max().item() < 1e-4


def test_untied_export_matches_transformers_and_imports_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    from convert_hf import export_hf, import_hf
    from safetensors.torch import load_file
    # µP with non-trivial multipliers: lm_head must be written times output_mult
    model = tiny_model(input_scale=3.0, output_scale=2.0, tie_embeddings=False)
    run = write_checkpoint(tmp_path, model, make_tokenizer(tmp_path / "tok.json"))
    out = export_hf(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    mult = model.mult["output_mult"]
    torch.testing.assert_close(load_file(out / "model.safetensors")["lm_head.weight"],
                               model.lm_head.weight * mult)
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 40))
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max().item() < 1e-4
    back = import_hf(out)
    assert back.config == model.config
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), name
