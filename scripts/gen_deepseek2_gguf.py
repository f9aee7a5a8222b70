#!/usr/bin/env python3
"""Write a random-weight GGUF of architecture deepseek2 (MLA + MoE) with DeepSeek-V3's real dimensions.

Usage: gen_deepseek2_gguf.py --out OUT.gguf [--small] [--layers N] [--dense-lead N] [--seed N]
       [--vocab-from TOKENIZER.gguf] [--check]

For benchmarking only (scripts/bench-moe.sh): one (or --layers N) transformer block of DeepSeek-V3
(hidden 7168, 128 heads, q/kv LoRA ranks 1536/512, qk 128 + rope 64, v 128, 256 routed experts of 2048
+ 1 shared, 8 used, 8 groups of which 4 used, sigmoid gating, normalized weights x 2.5, YaRN x40), so
that one decode step does the work of one real layer: speed depends on shapes and tensor types, not on
values. The metadata keys and the tensor names and shapes are those llama.cpp's loader reads
(src/models/deepseek2.cpp, load_arch_hparams / load_arch_tensors) for a GGUF converted by a recent
convert_hf_to_gguf.py: MLA with the split attn_k_b {qk_nope, kv_lora, n_head} / attn_v_b {kv_lora,
v_head, n_head}, attention.key_length = kv_lora + rope and value_length = kv_lora (the MLA cache),
key_length_mla / value_length_mla = the per-head sizes. --small is a consistent model about 60x smaller
(hidden 1024, 16 heads, ranks 512/256, qk 64 + 32, v 64, 32 experts of 256) for quick checks.

The weights are written directly as quantized blocks (an F16 original of the full-size file would be
~23 GB and llama-quantize would need it): random but valid blocks with f16 scales chosen so that the
dequantized weights have mean ~0 and std ~0.02 (Q4_K: per-sub-block scale = min, dmin = 7.5 d, so
x = d sc (q - 7.5); Q6_K: positive sub-block scales; Q8_0: uniform int8), no NaN/inf scale:
  Q4_K  token_embd and every matrix whose rows are a multiple of 256 (attention, experts, shared expert)
  Q6_K  output.weight
  Q8_0  matrices whose row length is not a multiple of 256 (attn_k_b: rows of qk_nope = 128)
  F32   norms (1 + N(0, 0.02)), ffn_gate_inp (N(0, 0.02): routing varies by token), exp_probs_b.bias
        (N(0, 0.01)).
general.file_type says Q4_K_M, like a llama-quantize'd file. Every tensor has its own generator seeded
with (seed, tensor index): the file is reproducible byte for byte. Tensors are generated and written in
chunks (~32 MiB), so memory stays small whatever the size (full size: ~6.5 GB, 1 layer).

Tokenizer: every tokenizer.* key is copied from --vocab-from (default: the repository's
tests/data/models/tiny-deepseek-v3-q4_k_m.gguf, DeepSeek-V3's tokenizer truncated to 4096 tokens), so
n_vocab = 4096 and token_embd / output are {n_embd, 4096}.

--check reads the written file back (gguf-py), dequantizes a sample of every tensor and prints its
mean / std; it fails if anything is not finite.

Needs numpy and llama.cpp's gguf-py on PYTHONPATH (vendor/llama.cpp/gguf-py of the llama-cpp-python
sdist); scripts/bench-moe.sh sets both up.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("gen_deepseek2_gguf: the gguf package is missing: put llama.cpp's gguf-py on PYTHONPATH")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VOCAB = REPO / "tests" / "data" / "models" / "tiny-deepseek-v3-q4_k_m.gguf"
QT = gguf.GGMLQuantizationType
WEIGHT_STD = 0.02
CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class Config:
    n_embd: int
    n_layer: int
    n_dense_lead: int
    n_head: int
    q_lora: int
    kv_lora: int
    qk_nope: int
    qk_rope: int
    v_head: int
    n_expert: int
    n_expert_used: int
    n_expert_shared: int
    n_ff_exp: int
    n_ff: int  # dense (leading) blocks only
    n_group: int
    n_group_used: int
    n_ctx: int = 163840
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    yarn_factor: float = 40.0
    yarn_orig_ctx: int = 4096
    yarn_log_mul: float = 0.1  # as convert_hf_to_gguf.py writes it (0.1 * mscale_all_dim); llama.cpp divides by 0.1
    expert_weights_scale: float = 2.5


# deepseek-ai/DeepSeek-V3 config.json: hidden_size 7168, num_attention_heads 128, q_lora_rank 1536,
# kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128, n_routed_experts 256,
# num_experts_per_tok 8, n_shared_experts 1, moe_intermediate_size 2048, intermediate_size 18432,
# n_group 8, topk_group 4, scoring_func sigmoid, norm_topk_prob true, routed_scaling_factor 2.5,
# first_k_dense_replace 3 (0 here: every block is MoE), rope_theta 10000, rope_scaling yarn factor 40,
# original_max_position_embeddings 4096, mscale_all_dim 1.0, max_position_embeddings 163840,
# rms_norm_eps 1e-6.
FULL = Config(n_embd=7168, n_layer=1, n_dense_lead=0, n_head=128, q_lora=1536, kv_lora=512, qk_nope=128,
              qk_rope=64, v_head=128, n_expert=256, n_expert_used=8, n_expert_shared=1, n_ff_exp=2048,
              n_ff=18432, n_group=8, n_group_used=4)
SMALL = Config(n_embd=1024, n_layer=1, n_dense_lead=0, n_head=16, q_lora=512, kv_lora=256, qk_nope=64,
               qk_rope=32, v_head=64, n_expert=32, n_expert_used=8, n_expert_shared=1, n_ff_exp=256,
               n_ff=2816, n_group=8, n_group_used=4)


# ---------------------------------------------------------------------------------------------
# Tensor plan: (name, ne in ggml order, type, kind)
# ---------------------------------------------------------------------------------------------

def mat_type(ne0: int, preferred: QT) -> QT:
    if ne0 % 256 == 0:
        return preferred
    if ne0 % 32 == 0:
        return QT.Q8_0
    raise SystemExit(f"gen_deepseek2_gguf: row length {ne0} is not a multiple of 32")


def tensor_plan(c: Config) -> list[tuple[str, tuple[int, ...], QT, str]]:
    n_vocab = VOCAB_N
    k_mla = c.qk_nope + c.qk_rope
    plan: list[tuple[str, tuple[int, ...], QT, str]] = []

    def mat(name: str, ne: tuple[int, ...], preferred: QT = QT.Q4_K) -> None:
        plan.append((name, ne, mat_type(ne[0], preferred), "mat"))

    mat("token_embd.weight", (c.n_embd, n_vocab))
    for i in range(c.n_layer):
        b = f"blk.{i}."
        plan.append((b + "attn_norm.weight", (c.n_embd,), QT.F32, "norm"))
        plan.append((b + "attn_q_a_norm.weight", (c.q_lora,), QT.F32, "norm"))
        plan.append((b + "attn_kv_a_norm.weight", (c.kv_lora,), QT.F32, "norm"))
        mat(b + "attn_q_a.weight", (c.n_embd, c.q_lora))
        mat(b + "attn_q_b.weight", (c.q_lora, c.n_head * k_mla))
        mat(b + "attn_kv_a_mqa.weight", (c.n_embd, c.kv_lora + c.qk_rope))
        mat(b + "attn_k_b.weight", (c.qk_nope, c.kv_lora, c.n_head))
        mat(b + "attn_v_b.weight", (c.kv_lora, c.v_head, c.n_head))
        mat(b + "attn_output.weight", (c.n_head * c.v_head, c.n_embd))
        plan.append((b + "ffn_norm.weight", (c.n_embd,), QT.F32, "norm"))
        if i < c.n_dense_lead:
            mat(b + "ffn_gate.weight", (c.n_embd, c.n_ff))
            mat(b + "ffn_up.weight", (c.n_embd, c.n_ff))
            mat(b + "ffn_down.weight", (c.n_ff, c.n_embd))
        else:
            plan.append((b + "ffn_gate_inp.weight", (c.n_embd, c.n_expert), QT.F32, "gate_inp"))
            plan.append((b + "exp_probs_b.bias", (c.n_expert,), QT.F32, "probs_bias"))
            mat(b + "ffn_gate_exps.weight", (c.n_embd, c.n_ff_exp, c.n_expert))
            mat(b + "ffn_up_exps.weight", (c.n_embd, c.n_ff_exp, c.n_expert))
            mat(b + "ffn_down_exps.weight", (c.n_ff_exp, c.n_embd, c.n_expert))
            sh = c.n_ff_exp * c.n_expert_shared
            mat(b + "ffn_gate_shexp.weight", (c.n_embd, sh))
            mat(b + "ffn_up_shexp.weight", (c.n_embd, sh))
            mat(b + "ffn_down_shexp.weight", (sh, c.n_embd))
    plan.append(("output_norm.weight", (c.n_embd,), QT.F32, "norm"))
    mat("output.weight", (c.n_embd, n_vocab), QT.Q6_K)
    return plan


VOCAB_N = 0  # set from the tokenizer source before planning


def n_bytes(ne: tuple[int, ...], qt: QT) -> int:
    blk, size = gguf.GGML_QUANT_SIZES[qt]
    n = math.prod(ne)
    assert ne[0] % blk == 0
    return n // blk * size


# ---------------------------------------------------------------------------------------------
# Random valid blocks
# ---------------------------------------------------------------------------------------------

U4_STD = math.sqrt((16**2 - 1) / 12)  # std of a uniform 4-bit quant (0..15)
U6_STD = math.sqrt((64**2 - 1) / 12)  # 6-bit (0..63)
I8_STD = math.sqrt((256**2 - 1) / 12)  # int8 (-128..127)


def rand_u8(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.uint8).reshape(shape)


def jitter(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.75, 1.25, n).astype(np.float32)


def f16_bytes(x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float16)
    assert np.isfinite(h).all()
    return h.view(np.uint8).reshape(-1, 2)


def blocks_q4_k(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Q4_K blocks (d f16, dmin f16, scales[12], qs[128]): x = d*sc*q - dmin*m with m = sc, dmin = 7.5 d."""
    out = np.empty((n, 144), dtype=np.uint8)
    out[:, 16:] = rand_u8(rng, (n, 128))
    sc = (16 + rand_u8(rng, (n, 8)) % 48).astype(np.uint8)  # 6-bit scales 16..63; mins = scales
    lo, hi = sc[:, :4], sc[:, 4:]
    packed = (lo & 0x3F) | ((hi >> 4) << 6)
    out[:, 4:8] = packed  # scales 0-3 (+ top bits of 4-7)
    out[:, 8:12] = packed  # mins 0-3 (same values)
    out[:, 12:16] = (hi & 0x0F) | ((hi & 0x0F) << 4)  # low bits of scales / mins 4-7
    rms_sc = np.sqrt((sc.astype(np.float32) ** 2).mean(axis=1))
    d = (WEIGHT_STD * jitter(rng, n) / (U4_STD * rms_sc)).astype(np.float16)
    dmin = (d.astype(np.float32) * 7.5).astype(np.float16)
    out[:, 0:2] = f16_bytes(d)
    out[:, 2:4] = f16_bytes(dmin)
    return out


def blocks_q6_k(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Q6_K blocks (ql[128], qh[64], scales[16] int8, d f16): x = d*scale*(q - 32)."""
    out = np.empty((n, 210), dtype=np.uint8)
    out[:, :192] = rand_u8(rng, (n, 192))
    sc = (8 + rand_u8(rng, (n, 16)) % 25).astype(np.uint8)  # int8 scales 8..32
    out[:, 192:208] = sc
    rms_sc = np.sqrt((sc.astype(np.float32) ** 2).mean(axis=1))
    d = WEIGHT_STD * jitter(rng, n) / (U6_STD * rms_sc)
    out[:, 208:210] = f16_bytes(d)
    return out


def blocks_q8_0(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Q8_0 blocks (d f16, qs[32] int8): x = d*q."""
    out = np.empty((n, 34), dtype=np.uint8)
    out[:, 2:] = rand_u8(rng, (n, 32))
    out[:, 0:2] = f16_bytes(WEIGHT_STD * jitter(rng, n) / I8_STD)
    return out


BLOCK_MAKERS = {QT.Q4_K: blocks_q4_k, QT.Q6_K: blocks_q6_k, QT.Q8_0: blocks_q8_0}


def f32_tensor(ne: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(tuple(reversed(ne)), dtype=np.float32)
    if kind == "norm":
        return np.float32(1.0) + np.float32(0.02) * x
    if kind == "gate_inp":
        return np.float32(0.02) * x
    if kind == "probs_bias":
        return np.float32(0.01) * x
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

def tokenizer_fields(path: Path) -> dict[str, object]:
    r = gguf.GGUFReader(path)
    fields = {k: f for k, f in r.fields.items() if k.startswith("tokenizer.")}
    if "tokenizer.ggml.tokens" not in fields:
        sys.exit(f"gen_deepseek2_gguf: {path} has no tokenizer.ggml.tokens")
    return fields


def copy_tokenizer(w: gguf.GGUFWriter, fields: dict[str, object]) -> None:
    for key, f in fields.items():
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None  # type: ignore[attr-defined]
        w.add_key_value(key, f.contents(), f.types[0], sub_type=sub)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Check
# ---------------------------------------------------------------------------------------------

def check(path: Path) -> None:
    r = gguf.GGUFReader(path)
    bad = 0
    print(f"gen_deepseek2_gguf: check {path}: {len(r.tensors)} tensors", file=sys.stderr)
    for t in r.tensors:
        qt = QT(t.tensor_type)
        data = t.data
        if qt != QT.F32:  # a sample of rows: ~1 MiB of blocks from the start, middle and end
            rows = data.reshape(-1, data.shape[-1])
            k = max(1, (1 << 20) // max(rows.shape[1], 1) // 3)
            idx = np.unique(np.concatenate([np.arange(k), rows.shape[0] // 2 + np.arange(k), rows.shape[0] - 1 - np.arange(k)]))
            idx = idx[(idx >= 0) & (idx < rows.shape[0])]
            x = gguf.quants.dequantize(np.ascontiguousarray(rows[idx]), qt)
        else:
            x = np.asarray(data, dtype=np.float32)
        ok = bool(np.isfinite(x).all())
        bad += not ok
        print(f"  {t.name:32s} {qt.name:5s} ne={list(map(int, t.shape))!s:22s} mean {x.mean():+.5f} "
              f"std {x.std():.5f} absmax {np.abs(x).max():.4f}{'' if ok else '  NOT FINITE'}", file=sys.stderr)
    if bad:
        sys.exit(f"gen_deepseek2_gguf: {bad} tensor(s) with non-finite values")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def main() -> None:
    global VOCAB_N
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--small", action="store_true", help="a small model of the same layout (quick checks)")
    ap.add_argument("--layers", type=int, default=1, help="transformer blocks (default 1)")
    ap.add_argument("--dense-lead", type=int, default=0, help="leading dense-FFN blocks (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-from", type=Path, default=DEFAULT_VOCAB, help="GGUF whose tokenizer.* keys are copied")
    ap.add_argument("--check", action="store_true", help="read the file back and check a sample of every tensor")
    a = ap.parse_args()
    if a.layers < 1 or not 0 <= a.dense_lead <= a.layers:
        sys.exit("gen_deepseek2_gguf: need --layers >= 1 and 0 <= --dense-lead <= --layers")
    c = dataclasses.replace(SMALL if a.small else FULL, n_layer=a.layers, n_dense_lead=a.dense_lead)
    t0 = time.time()

    tok = tokenizer_fields(a.vocab_from)
    VOCAB_N = len(tok["tokenizer.ggml.tokens"].data)  # type: ignore[attr-defined]
    plan = tensor_plan(c)
    total = sum(n_bytes(ne, qt) for _, ne, qt, _ in plan)
    n_params = sum(math.prod(ne) for _, ne, _, _ in plan)

    w = gguf.GGUFWriter(a.out, "deepseek2")
    w.add_type("model")
    label = "small" if a.small else "DeepSeek-V3 dims"
    w.add_name(f"Synthetic deepseek2 ({label}, {c.n_layer} layer{'s' if c.n_layer > 1 else ''}, random weights)")
    w.add_description("random weights with DeepSeek-V3's layout, for speed tests only (ember scripts/gen_deepseek2_gguf.py)")
    w.add_context_length(c.n_ctx)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(c.n_ff)
    w.add_head_count(c.n_head)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_eps)
    w.add_vocab_size(VOCAB_N)
    w.add_leading_dense_block_count(c.n_dense_lead)
    w.add_q_lora_rank(c.q_lora)
    w.add_kv_lora_rank(c.kv_lora)
    w.add_key_length(c.kv_lora + c.qk_rope)
    w.add_value_length(c.kv_lora)
    w.add_key_length_mla(c.qk_nope + c.qk_rope)
    w.add_value_length_mla(c.v_head)
    w.add_expert_feed_forward_length(c.n_ff_exp)
    w.add_expert_count(c.n_expert)
    w.add_expert_used_count(c.n_expert_used)
    w.add_expert_shared_count(c.n_expert_shared)
    w.add_expert_weights_scale(c.expert_weights_scale)
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_expert_group_count(c.n_group)
    w.add_expert_group_used_count(c.n_group_used)
    w.add_rope_dimension_count(c.qk_rope)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(c.yarn_factor)
    w.add_rope_scaling_orig_ctx_len(c.yarn_orig_ctx)
    w.add_rope_scaling_yarn_log_mul(c.yarn_log_mul)
    copy_tokenizer(w, tok)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)

    for name, ne, qt, _ in plan:
        if qt == QT.F32:
            w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(np.float32), n_bytes(ne, qt))
        else:
            blk, size = gguf.GGML_QUANT_SIZES[qt]
            byte_shape = tuple(reversed(ne[1:])) + (ne[0] // blk * size,)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), n_bytes(ne, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None and len(w.fout) == 1
    fout = w.fout[0]

    print(f"gen_deepseek2_gguf: {a.out}: {len(plan)} tensors, {n_params / 1e9:.2f} B parameters, "
          f"{total / 2**30:.2f} GiB of tensor data", file=sys.stderr)
    done, last = 0, 0.0
    for idx, (name, ne, qt, kind) in enumerate(plan):
        rng = np.random.default_rng([a.seed, idx])
        w.write_padding(fout, fout.tell())
        nb = n_bytes(ne, qt)
        if qt == QT.F32:
            f32_tensor(ne, kind, rng).tofile(fout)
            done += nb
        else:
            size = gguf.GGML_QUANT_SIZES[qt][1]
            n_blocks = nb // size
            step = max(1, CHUNK_BYTES // size)
            make = BLOCK_MAKERS[qt]
            for s in range(0, n_blocks, step):
                make(rng, min(step, n_blocks - s)).tofile(fout)
                done += min(step, n_blocks - s) * size
                now = time.time()
                if now - last >= 5:
                    last = now
                    print(f"gen_deepseek2_gguf: {done / 2**30:6.2f} / {total / 2**30:.2f} GiB ({100 * done / total:3.0f}%), "
                          f"{name}, {now - t0:.0f} s", file=sys.stderr, flush=True)
        w.write_padding(fout, nb)
    w.close()
    print(f"gen_deepseek2_gguf: wrote {a.out}: {a.out.stat().st_size / 2**20:.0f} MiB in {time.time() - t0:.0f} s",
          file=sys.stderr)
    if a.check:
        check(a.out)


if __name__ == "__main__":
    main()
