"""convert_hf.py's tokenizer identity: chat templates and BOS/EOS conventions both ways
(import -> sample.py -> export -> transformers), what prepare.py reads from an imported
checkpoint, and the import/export edge cases."""
import json
import os

import pytest
import torch

from test_sample import TEXT, make_tokenizer, tiny_model, write_checkpoint

transformers = pytest.importorskip("transformers")

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "user", "content": "To be, or not to be?"}]


def chatml_llama(root, tie=True):
    """A transformers Llama dir as a hub chat model ships it: ChatML special tokens, EOS
    <|im_end|> = 2 while <|endoftext|> = 0 comes first in prepare.py's EOS candidates."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>", chat_template=CHATML)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tie,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(root / "chatml")
    tok.save_pretrained(root / "chatml")
    return hf, tok, root / "chatml"


def hf_chat_ids(tok):
    return list(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False))


def hf_greedy(model, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, num_beams=1,
                         eos_token_id=model.config.eos_token_id, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    eos = model.config.eos_token_id
    return new[:new.index(eos)] if eos in new else new


def test_chat_template_round_trip_import_sample_export_transformers(tmp_path, capsys):
    import convert_hf
    from checkpoint import load_model_and_tokenizer as load_checkpoint
    from sample import chat_prompt_ids, generate_text, main as sample_main
    hf, hf_tok, src = chatml_llama(tmp_path)
    convert_hf.main(["import", str(src), str(tmp_path / "imported")])
    model, tok, _ = load_checkpoint(tmp_path / "imported")
    assert tok.chat_template == CHATML and tok.eos_id == 2 and tok.bos_id == 1 and tok.pad_id == 0
    assert {"<|im_start|>", "<|im_end|>"} <= set(tok.special_tokens)
    ids = chat_prompt_ids(tok, MESSAGES[0]["content"])
    assert ids == hf_chat_ids(hf_tok) and ids[0] == 1 and ids.count(1) == 2  # <|im_start|>: one id each
    (_, ours), = generate_text(model, tok, ids, 12, temperature=0)
    with torch.no_grad():
        assert ours == hf_greedy(hf, ids, 12) and len(ours) >= 2
    sample_main([str(tmp_path / "imported"), "--chat", "--prompt", MESSAGES[0]["content"],
                 "--temperature", "0", "--max-new-tokens", "12", "--device", "cpu"])
    assert "<|im_start|>assistant\n" + tok.decode(ours) in capsys.readouterr().out

    out = convert_hf.export_hf(tmp_path / "imported", tmp_path / "export")
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"] == CHATML and tok_cfg["eos_token"] == "<|im_end|>"
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 0)
    again = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_chat_ids(again) == ids
    exported = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert hf_greedy(exported, ids, 12) == ours
    # and the export imports back with the same identity
    assert convert_hf.import_hf(out).checkpoint_info["tokenizer"]["chat_template"] == CHATML


def test_export_of_this_projects_model_prepends_eos_as_sample_py_does(tmp_path):
    import convert_hf
    from prepare import load_tokenizer
    from checkpoint import load_model_and_tokenizer as load_checkpoint
    from sample import generate_text
    run = write_checkpoint(tmp_path, tiny_model(input_scale=3.0), make_tokenizer(tmp_path / "tok.json"))
    model, tok, _ = load_checkpoint(run)
    out = convert_hf.export_hf(run, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = "To be, or not"
    ids = hf_tok(prompt)["input_ids"]
    assert ids == tok.encode_prompt(prompt) == [tok.eos_id] + tok.encode(prompt)
    assert hf_tok.bos_token_id == tok.eos_id
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    (_, ours), = generate_text(model, tok, ids, 10, temperature=0)
    with torch.no_grad():
        assert hf_greedy(hf, ids, 10) == ours
    # import gives back the original tokenizer: same sha256, so fine-tuning data still matches
    convert_hf.save_imported(convert_hf.import_hf(out), tmp_path / "back")
    assert load_tokenizer(str(tmp_path / "back")).sha256 == tok.sha256
    assert "prompt_prefix" not in convert_hf.import_hf(out).checkpoint_info["tokenizer"]


def test_prepare_reads_the_imported_checkpoints_eos_and_template(tmp_path):
    import convert_hf
    import prepare
    _, _, src = chatml_llama(tmp_path)
    convert_hf.main(["import", str(src), str(tmp_path / "imported")])
    # the checkpoint's tokenizer.json alone would be read by guessing EOS: the wrong one here
    assert prepare.load_tokenizer(str(tmp_path / "imported" / "tokenizer.json")).eos_id == 0
    tok = prepare.load_tokenizer(str(tmp_path / "imported"))
    assert (tok.eos_id, tok.bos_id, tok.chat_template) == (2, 1, CHATML)
    chats = tmp_path / "chat.jsonl"
    chats.write_text("".join(json.dumps({"prompt": TEXT[i:i + 20], "response": TEXT[i + 20:i + 40]}) + "\n"
                             for i in range(0, 200, 10)))
    meta = prepare.prepare([str(chats)], tmp_path / "sft", str(tmp_path / "imported"), sft=True,
                           val_fraction=0.1, progress=False, log=lambda *a: None)
    assert meta["tokenizer"]["eos_id"] == 2 and meta["tokenizer"]["chat_template"] == CHATML
    ckpt_meta = convert_hf.import_hf(src).checkpoint_info["tokenizer"]
    prepare.check_vocab(meta["tokenizer"], 330, ckpt_meta)  # the same identity: accepted
    with pytest.raises(prepare.PrepareError, match="--eos-token"):
        prepare.load_tokenizer(str(tmp_path / "imported"), eos_token="<|endoftext|>")


def test_check_vocab_refuses_a_bos_or_eos_mismatch():
    from prepare import PrepareError, check_vocab
    model = {"name": "m", "vocab_size": 330, "sha256": "ab" * 32, "eos_id": 2, "bos_id": 1}
    check_vocab(dict(model), 330, model)
    with pytest.raises(PrepareError, match="EOS mismatch: the data uses id 0, the checkpoint 2"):
        check_vocab({**model, "eos_id": 0}, 330, model)
    with pytest.raises(PrepareError, match="BOS mismatch"):
        check_vocab({**model, "bos_id": None}, 330, model)
    old = {k: v for k, v in model.items() if k != "bos_id"}  # a checkpoint that records no BOS
    check_vocab({**model, "bos_id": 5}, 330, old)


def test_import_refuses_an_untied_config_without_lm_head(tmp_path):
    import convert_hf
    from safetensors.torch import load_file, save_file
    _, _, src = chatml_llama(tmp_path, tie=False)
    weights = load_file(src / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SystemExit) as e:
        convert_hf.main(["import", str(src), str(tmp_path / "imported")])
    msg = str(e.value.code)
    assert msg.startswith("convert_hf.py: error: ") and "lm_head.weight" in msg and "\n" not in msg
    assert not (tmp_path / "imported").exists()


def test_import_accepts_head_dim_null(tmp_path):
    import convert_hf
    hf, _, src = chatml_llama(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["head_dim"] = None
    (src / "config.json").write_text(json.dumps(cfg))
    model = convert_hf.import_hf(src)
    idx = torch.randint(0, 330, (1, 20))
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max().item() < 1e-4


def test_exported_weights_are_readable_by_others(tmp_path):
    import convert_hf
    run = write_checkpoint(tmp_path, tiny_model(), make_tokenizer(tmp_path / "tok.json"))
    old = os.umask(0o022)
    try:
        out = convert_hf.export_hf(run, tmp_path / "hf")
    finally:
        os.umask(old)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
