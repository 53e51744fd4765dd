"""transformers' DeepseekV3ForCausalLM trained as v3lab's `train_throughput` bench trains:
the model of a v3lab `config.json` (the public code's field names) with random initial
weights, AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1), gradients clipped to
norm 1, on a fixed batch of random tokens; one warm-up step, then STEPS timed. Prints one
JSON object: tokens/s, seconds per step, the share of the threads busy (process CPU time
over wall time × threads), versions.

    python benches/transformers_train.py configs/compare-cpu --threads 2 --batch 8 --steps 4
"""

import argparse
import json
import pathlib
import time

import torch
import transformers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM


def hf_config(v3lab: dict) -> DeepseekV3Config:
    """The public code's ModelArgs names → transformers' DeepseekV3Config names."""
    assert v3lab.get("score_func", "sigmoid") == "sigmoid", "transformers' DeepSeek-V3 gate is sigmoid only"
    assert v3lab.get("original_seq_len", v3lab["max_seq_len"]) >= v3lab["max_seq_len"], "no YaRN here"
    return DeepseekV3Config(
        vocab_size=v3lab["vocab_size"],
        hidden_size=v3lab["dim"],
        intermediate_size=v3lab["inter_dim"],
        moe_intermediate_size=v3lab["moe_inter_dim"],
        num_hidden_layers=v3lab["n_layers"],
        first_k_dense_replace=v3lab["n_dense_layers"],
        num_attention_heads=v3lab["n_heads"],
        num_key_value_heads=v3lab["n_heads"],
        n_routed_experts=v3lab["n_routed_experts"],
        n_shared_experts=v3lab["n_shared_experts"],
        num_experts_per_tok=v3lab["n_activated_experts"],
        n_group=v3lab["n_expert_groups"],
        topk_group=v3lab["n_limited_groups"],
        routed_scaling_factor=v3lab["route_scale"],
        norm_topk_prob=True,
        q_lora_rank=v3lab["q_lora_rank"],
        kv_lora_rank=v3lab["kv_lora_rank"],
        qk_nope_head_dim=v3lab["qk_nope_head_dim"],
        qk_rope_head_dim=v3lab["qk_rope_head_dim"],
        v_head_dim=v3lab["v_head_dim"],
        max_position_embeddings=v3lab["max_seq_len"],
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    v3 = json.loads((pathlib.Path(args.config_dir) / "config.json").read_text())
    model = DeepseekV3ForCausalLM(hf_config(v3)).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    tokens = torch.randint(0, v3["vocab_size"], (args.batch, args.seq))

    def step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({
        "tokens_per_sec": args.batch * args.seq * args.steps / wall,
        "seconds_per_step": wall / args.steps,
        "threads_busy": cpu / wall / args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "experts_implementation": getattr(model.config, "experts_implementation", None) or "default",
    }), flush=True)


if __name__ == "__main__":
    main()
