"""Goldens made by transformers itself: tiny DeepSeek-V3 checkpoints written by
`save_pretrained` (BF16 weights, YaRN in `rope_parameters`, no MTP weights although the
config declares one MTP layer), their float64 logits and greedy generations.

Run from the repository root with torch and transformers installed:
    python goldens/transformers/make.py
It rewrites goldens/transformers/<case>/ and prints the versions it used.
"""

import json
import math
import pathlib
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

HERE = pathlib.Path(__file__).resolve().parent

BASE = dict(
    vocab_size=96,
    hidden_size=48,
    intermediate_size=96,
    moe_intermediate_size=24,
    num_hidden_layers=3,
    first_k_dense_replace=1,
    num_attention_heads=4,
    # transformers' default, meaningless for MLA: v3lab must accept and ignore it.
    num_key_value_heads=128,
    n_shared_experts=1,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_group=4,
    topk_group=2,
    routed_scaling_factor=2.5,
    kv_lora_rank=16,
    q_lora_rank=24,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=12,
    rms_norm_eps=1e-6,
    bos_token_id=0,
    eos_token_id=1,
    tie_word_embeddings=False,
)

CASES = {
    # YaRN declared in rope_parameters, context 4x the original one.
    "yarn": dict(
        max_position_embeddings=256,
        rope_parameters=dict(
            rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64,
            beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
        ),
    ),
    # max_position_embeddings equal to the original: transformers still applies YaRN
    # (the public code would not); mscale_all_dim differs from mscale, so the rotary
    # amplitude is not 1 either.
    "yarn-equal": dict(
        max_position_embeddings=64,
        rope_parameters=dict(
            rope_type="yarn", rope_theta=50000.0, factor=8.0, original_max_position_embeddings=64,
            beta_fast=32.0, beta_slow=1.0, mscale=0.8, mscale_all_dim=0.6,
        ),
    ),
}


def randomise(model, gen):
    """Weights large enough that logits and routing are far from ties."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in))
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen, dtype=torch.float64))


def main():
    torch.manual_seed(0)
    for i, (case, extra) in enumerate(CASES.items()):
        out = HERE / case
        out.mkdir(exist_ok=True)
        config = DeepseekV3Config(**BASE, **extra)
        model = DeepseekV3ForCausalLM(config).to(torch.float64)
        gen = torch.Generator().manual_seed(1000 + i)
        randomise(model, gen)
        model.to(torch.bfloat16).save_pretrained(out)

        # Float64 from the saved (bf16-exact) weights, as any user would load them.
        model = DeepseekV3ForCausalLM.from_pretrained(
            out, dtype=torch.float64, experts_implementation="eager"  # grouped_mm has no float64
        ).eval()
        tokens = torch.randint(0, config.vocab_size, (2, 24), generator=gen)
        with torch.no_grad():
            logits = model(tokens).logits
        tensors = {"tokens": tokens.to(torch.int64).contiguous(), "logits": logits.contiguous()}
        for p in range(2):
            prompt = torch.randint(2, config.vocab_size, (1, 5 + 3 * p), generator=gen)
            with torch.no_grad():
                ids = model.generate(prompt, max_new_tokens=20, do_sample=False)
            tensors[f"prompt{p}"] = prompt[0].contiguous()
            tensors[f"greedy{p}"] = ids[0, prompt.shape[1]:].contiguous()
        save_file(tensors, out / "expected.safetensors",
                  metadata={"torch": torch.__version__, "transformers": transformers.__version__})
        print(case, "saved:", sorted(p.name for p in out.iterdir()))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
