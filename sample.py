"""Sample text from a checkpoint: KV-cache decoding with temperature, top-k and top-p.

    python sample.py out/run                       # run dir (newest step), step dir or model.pt
    python sample.py out/run --prompt "To be" --num-samples 3 --max-new-tokens 200
    python sample.py out/run --prompt-file q.txt --temperature 0      # greedy
    python sample.py out/run --chat --prompt "What is 17*23?"         # decay-phase (SFT) models

The pure pieces (`top_k_mask`, `top_p_mask`, `sample_next`, `generate`) are imported by
eval_reasoning.py and the tests; checkpoints are read through checkpoint.py.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from checkpoint import load_model_and_tokenizer


# ----------------------------------------------------------------------------------------
# sampling: pure functions on logits [..., V]

def top_k_mask(logits, k):
    """Keep the k largest logits per row, set the rest to -inf (ties at the k-th value kept)."""
    if k is None or k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_mask(logits, p):
    """Nucleus: keep the smallest set of top tokens whose probability sums to >= p."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    # a token is dropped when the mass of the tokens strictly before it already reaches p;
    # the top token is therefore always kept, even for p -> 0
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits [B, V] -> next token ids [B, 1]. temperature 0 = greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = top_p_mask(top_k_mask(logits.float() / temperature, top_k), top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None,
             use_cache=True, generator=None, stop_fn=None):
    """Extend idx [B, T] by up to max_new_tokens -> [B, T + n].

    A row is finished at eos_id, or when stop_fn(row, new_token_ids) is True (stop strings);
    finished rows are padded with eos_id (or their last token) until every row is done, then
    generation stops early. Callers cut each row at its first stop.
    use_cache=False re-runs the whole sequence each step: the reference the KV cache must match.
    """
    B, T = idx.shape
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    pad = torch.full((B, 1), eos_id if eos_id is not None else 0, dtype=idx.dtype, device=idx.device)
    cache = model.new_kv_cache(B, T + max_new_tokens, device=idx.device) if use_cache else None
    logits = model(idx, kv_cache=cache, last_only=True)[:, -1, :]
    for i in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, top_p, generator)
        next_id = torch.where(finished[:, None], pad, next_id)
        idx = torch.cat([idx, next_id], dim=1)
        if eos_id is not None:
            finished |= next_id[:, 0] == eos_id
        if stop_fn is not None:
            for b in range(B):
                if not finished[b] and stop_fn(b, idx[b, T:].tolist()):
                    finished[b] = True
        if bool(finished.all()) or i == max_new_tokens - 1:
            break
        if use_cache:
            logits = model(next_id, kv_cache=cache, last_only=True)[:, -1, :]
        else:
            logits = model(idx, last_only=True)[:, -1, :]
    return idx


def stop_at(text, stop_strings):
    """Cut text at the earliest occurrence of any stop string -> (text, hit)."""
    cut = min((i for i in (text.find(s) for s in stop_strings or ()) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate_text(model, tokenizer, prompt_ids, max_new_tokens, temperature=1.0, top_k=None,
                  top_p=None, stop=(), num_samples=1, generator=None, device="cpu"):
    """Sample num_samples continuations of prompt_ids -> list of (text, new token ids).

    Stops at EOS and at any string in `stop` (the text is cut before it)."""
    eos = tokenizer.eos_id
    stop = [s for s in stop if s]

    def stop_fn(row, new_ids):
        # decode only the tail: a stop string can only newly appear near the end
        return bool(stop) and stop_at(tokenizer.decode(new_ids[-64:]), stop)[1]

    idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens, temperature, top_k, top_p, eos_id=eos,
                   generator=generator, stop_fn=stop_fn if stop else None)
    results = []
    for row in out[:, len(prompt_ids):].tolist():
        if eos is not None and eos in row:
            row = row[:row.index(eos)]
        text, _ = stop_at(tokenizer.decode(row), stop)
        results.append((text, row))
    return results


def chat_prompt_ids(tokenizer, prompt):
    """One user turn ending with the assistant header -> the whole prompt's ids. A model with
    its own chat template (imported) gets it, rendered and tokenized as transformers'
    apply_chat_template does (the template places any BOS itself); otherwise prepare.py's
    template, tokenized segment by segment exactly as the SFT data was, after EOS."""
    messages = [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    from prepare import encode_chat
    return [tokenizer.eos_id] + encode_chat(tokenizer, messages, add_generation_prompt=True)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    ap.add_argument("checkpoint", help="run dir, step dir or model.pt")
    ap.add_argument("--prompt", default="", help="default: empty (unconditional samples)")
    ap.add_argument("--prompt-file", help="read the prompt from this file (overrides --prompt)")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=200, help="0 = off")
    ap.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto = bfloat16 on GPU, float32 on CPU")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    try:
        model, tokenizer, model_pt = load_model_and_tokenizer(args.checkpoint, args.device)
    except FileNotFoundError as e:  # a wrong path is one line, not a traceback
        sys.exit(f"error: {e}")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device.startswith("cuda") else "float32")
    model.to(getattr(torch, dtype))
    prompt = Path(args.prompt_file).read_text() if args.prompt_file else args.prompt
    # this project's models: EOS first (every training document follows the previous one's
    # EOS); imported ones: as transformers' tokenizer(text) or chat template would
    prompt_ids = (chat_prompt_ids(tokenizer, prompt) if args.chat else tokenizer.encode_prompt(prompt)) \
        or [tokenizer.prefix_id]  # an empty prompt for a tokenizer that adds nothing
    print(f"# {model_pt} | {model.num_params() / 1e6:.1f}M params | prompt {len(prompt_ids)} tokens")

    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    t0 = time.perf_counter()
    results = generate_text(model, tokenizer, prompt_ids, args.max_new_tokens, args.temperature,
                            args.top_k, args.top_p, args.stop, args.num_samples, gen, args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    n_new = sum(len(ids) for _, ids in results)
    shown = tokenizer.decode(prompt_ids) if args.chat else prompt  # with its special tokens
    for text, _ in results:
        print(shown + text)
        print("-" * 80)
    print(f"# {n_new} tokens in {dt:.2f}s: {n_new / dt:.1f} tokens/s "
          f"({args.num_samples} sample(s) decoded as one batch, KV cache)")


if __name__ == "__main__":
    main()
