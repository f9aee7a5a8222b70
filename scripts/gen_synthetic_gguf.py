#!/usr/bin/env python3
"""Write a random-weight GGUF file with the real shapes of a Qwen2-architecture model.

Usage: gen_synthetic_gguf.py --model {qwen2.5-0.5b,deepseek-r1-distill-qwen-1.5b} --vocab VOCAB.gguf --out OUT.gguf
       [--seed N]

For benchmarking only (scripts/bench-vs-llamacpp.sh): the real weights cannot be downloaded here, but
speed depends on shapes and tensor types, not on the values. The file is laid out the way llama.cpp's
convert_hf_to_gguf.py (Qwen2Model, --outtype f16) writes these models: general.architecture = qwen2,
the qwen2.* hyper-parameters, tensors token_embd / blk.N.{attn_norm, attn_q, attn_k, attn_v (weight +
bias), attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down} / output_norm / output (untied models only),
2-D matrices F16, norms and biases F32. Quantize the result with llama-quantize.

Weights: normal(0, 0.02) matrices, norms 1 + normal(0, 0.02), biases normal(0, 0.02); every tensor
from its own generator seeded with (seed, tensor index), so files are reproducible.

Tokenizer: every tokenizer.* key is copied from llama.cpp's vocab-only file ggml-vocab-qwen2.gguf
(byte-level BPE, pre-tokenizer qwen2, 151,643 regular tokens + merges, already padded to 151,936
entries with [PADn] tokens exactly like convert_hf_to_gguf.py pads to config.json's vocab_size). That
file comes from the Qwen1.5 tokenizer (3 added tokens); the ids from 151,643 are then rewritten to the
added tokens of the model's own tokenizer (tokenizer.json "added_tokens"), with the token types the
converter gives them (CONTROL for <|...|> / <｜...｜> or special ones, USER_DEFINED otherwise, UNUSED for
the [PADn] rest), plus the model's bos/eos/padding ids, add_bos_token, pre-tokenizer name and chat
template (from the vocab/templates directory next to the vocab file, when present). The BPE merges and
regular tokens are shared by Qwen2.5 and the R1 distills.

Needs numpy and llama.cpp's gguf-py on PYTHONPATH (vendor/llama.cpp/gguf-py of the llama-cpp-python
sdist); the bench script sets both up.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("gen_synthetic_gguf: the gguf package is missing: put llama.cpp's gguf-py on PYTHONPATH")

QWEN25_ADDED = [
    # Qwen2.5 tokenizer.json added_tokens, ids 151643.. (special=True unless listed in NOT_SPECIAL)
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
R1_DISTILL_QWEN_ADDED = [
    # DeepSeek-R1-Distill-Qwen tokenizer.json added_tokens, ids 151643..
    "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<|EOT|>",
    "<think>", "</think>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
FIRST_ADDED_ID = 151643


@dataclass
class Spec:
    name: str
    size_label: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    added_tokens: list[str]
    bos: int
    eos: int
    pad: int
    add_bos: bool
    pre: str
    template: str | None  # file name in <vocab dir>/templates
    head_dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.head_dim = self.n_embd // self.n_head


# Dimensions from the models' config.json on the Hugging Face hub:
# Qwen/Qwen2.5-0.5B-Instruct: hidden_size 896, num_hidden_layers 24, num_attention_heads 14,
#   num_key_value_heads 2 (head dim 64), intermediate_size 4864, vocab_size 151936,
#   max_position_embeddings 32768, rope_theta 1000000.0, rms_norm_eps 1e-06, tie_word_embeddings true,
#   q/k/v projections with bias (Qwen2 attention), bos 151643, eos 151645 (<|im_end|>).
# deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (Qwen2.5-Math-1.5B base): hidden_size 1536,
#   num_hidden_layers 28, num_attention_heads 12, num_key_value_heads 2 (head dim 128),
#   intermediate_size 8960, vocab_size 151936, max_position_embeddings 131072, rope_theta 10000,
#   rms_norm_eps 1e-06, tie_word_embeddings false, bos 151646, eos 151643, add_bos_token true.
SPECS = {
    "qwen2.5-0.5b": Spec(
        name="Synthetic Qwen2.5 0.5B Instruct (random weights)", size_label="0.5B",
        n_embd=896, n_layer=24, n_head=14, n_head_kv=2, n_ff=4864, n_vocab=151936, n_ctx=32768,
        rope_theta=1000000.0, rms_eps=1e-6, tied=True, added_tokens=QWEN25_ADDED,
        bos=151643, eos=151645, pad=151643, add_bos=False, pre="qwen2",
        template="Qwen-Qwen2.5-7B-Instruct.jinja",
    ),
    "deepseek-r1-distill-qwen-1.5b": Spec(
        name="Synthetic DeepSeek R1 Distill Qwen 1.5B (random weights)", size_label="1.5B",
        n_embd=1536, n_layer=28, n_head=12, n_head_kv=2, n_ff=8960, n_vocab=151936, n_ctx=131072,
        rope_theta=10000.0, rms_eps=1e-6, tied=False, added_tokens=R1_DISTILL_QWEN_ADDED,
        bos=151646, eos=151643, pad=151643, add_bos=True, pre="deepseek-r1-qwen",
        template="deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    ),
}

NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<think>", "</think>", "<|fim_prefix|>", "<|fim_middle|>",
               "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}


def looks_special(tok: str) -> bool:  # convert_hf_to_gguf.py ModelBase.does_token_look_special
    return (tok.startswith("<|") and tok.endswith("|>")) or (tok.startswith("<｜") and tok.endswith("｜>"))


def tensor_plan(s: Spec) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape = reversed ggml ne, kind) in the order they are written."""
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    plan: list[tuple[str, tuple[int, ...], str]] = [("token_embd.weight", (s.n_vocab, s.n_embd), "matrix")]
    for i in range(s.n_layer):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (s.n_embd,), "norm"),
            (b + "attn_q.weight", (q, s.n_embd), "matrix"),
            (b + "attn_q.bias", (q,), "bias"),
            (b + "attn_k.weight", (kv, s.n_embd), "matrix"),
            (b + "attn_k.bias", (kv,), "bias"),
            (b + "attn_v.weight", (kv, s.n_embd), "matrix"),
            (b + "attn_v.bias", (kv,), "bias"),
            (b + "attn_output.weight", (s.n_embd, q), "matrix"),
            (b + "ffn_norm.weight", (s.n_embd,), "norm"),
            (b + "ffn_gate.weight", (s.n_ff, s.n_embd), "matrix"),
            (b + "ffn_up.weight", (s.n_ff, s.n_embd), "matrix"),
            (b + "ffn_down.weight", (s.n_embd, s.n_ff), "matrix"),
        ]
    plan.append(("output_norm.weight", (s.n_embd,), "norm"))
    if not s.tied:
        plan.append(("output.weight", (s.n_vocab, s.n_embd), "matrix"))
    return plan


def make_tensor(shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "matrix":  # F16, generated in row chunks to bound the float32 temporary
        out = np.empty(shape, dtype=np.float16)
        step = max(1, (1 << 24) // shape[1])
        for r in range(0, shape[0], step):
            chunk = rng.standard_normal((min(step, shape[0] - r), shape[1]), dtype=np.float32)
            chunk *= 0.02
            out[r : r + step] = chunk
        return out
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return (x + np.float32(1.0)) if kind == "norm" else x


def copy_tokenizer(w: gguf.GGUFWriter, vocab_path: Path, s: Spec) -> None:
    r = gguf.GGUFReader(vocab_path)
    fields = {k: f for k, f in r.fields.items() if k.startswith("tokenizer.")}
    if "tokenizer.ggml.tokens" not in fields:
        sys.exit(f"gen_synthetic_gguf: {vocab_path} has no tokenizer.ggml.tokens")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    if len(tokens) > s.n_vocab:
        sys.exit(f"gen_synthetic_gguf: the vocab has {len(tokens)} tokens, more than the model's {s.n_vocab}")
    # Pad (or re-pad) to the model's vocab_size the way convert_hf_to_gguf.py does.
    tokens = tokens[:FIRST_ADDED_ID] + [f"[PAD{i}]" for i in range(FIRST_ADDED_ID, s.n_vocab)]
    types = types[:FIRST_ADDED_ID] + [int(gguf.TokenType.UNUSED)] * (s.n_vocab - FIRST_ADDED_ID)
    for j, tok in enumerate(s.added_tokens):
        tokens[FIRST_ADDED_ID + j] = tok
        special = tok not in NOT_SPECIAL
        types[FIRST_ADDED_ID + j] = int(
            gguf.TokenType.CONTROL if special or looks_special(tok) else gguf.TokenType.USER_DEFINED
        )
    overrides: dict[str, object] = {
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.pre": s.pre,
        "tokenizer.ggml.bos_token_id": s.bos,
        "tokenizer.ggml.eos_token_id": s.eos,
        "tokenizer.ggml.padding_token_id": s.pad,
        "tokenizer.ggml.add_bos_token": s.add_bos,
        "tokenizer.ggml.add_eos_token": False,
    }
    template = vocab_path.parent / "templates" / s.template if s.template else None
    if template is not None and template.is_file():
        overrides["tokenizer.chat_template"] = template.read_text(encoding="utf-8")
    for key, f in fields.items():
        val = overrides.pop(key, None)
        if val is None:
            val = f.contents()
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, val, f.types[0], sub_type=sub)
    for key, val in overrides.items():  # keys the vocab file lacks
        if isinstance(val, bool):
            w.add_bool(key, val)
        elif isinstance(val, str):
            w.add_string(key, val)
        else:
            w.add_uint32(key, int(val))  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(SPECS))
    ap.add_argument("--vocab", required=True, type=Path, help="llama.cpp vocab-only GGUF (ggml-vocab-qwen2.gguf)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = SPECS[a.model]
    t0 = time.time()

    w = gguf.GGUFWriter(a.out, "qwen2")
    w.add_type("model")
    w.add_name(s.name)
    w.add_size_label(s.size_label)
    w.add_description("random weights with the real shapes, for speed tests only (ember scripts/gen_synthetic_gguf.py)")
    w.add_block_count(s.n_layer)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_freq_base(s.rope_theta)
    w.add_layer_norm_rms_eps(s.rms_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    copy_tokenizer(w, a.vocab, s)

    plan = tensor_plan(s)
    for name, shape, kind in plan:
        dt = np.dtype(np.float16 if kind == "matrix" else np.float32)
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    n_params = 0
    for idx, (name, shape, kind) in enumerate(plan):
        t = make_tensor(shape, kind, np.random.default_rng([a.seed, idx]))
        n_params += t.size
        w.write_tensor_data(t)
    w.close()
    print(
        f"gen_synthetic_gguf: {a.out}: {s.name}, {len(plan)} tensors, {n_params / 1e6:.1f} M parameters, "
        f"{a.out.stat().st_size / 2**20:.0f} MiB, {time.time() - t0:.0f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
