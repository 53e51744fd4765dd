"""The public DeepSeek-V3 code's own PyTorch model (`inference/model.py` of
github.com/deepseek-ai/DeepSeek-V3, eager) trained as benches/transformers_train.py trains
transformers' DeepseekV3ForCausalLM: the model of a v3lab `config.json` with random initial
weights, AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1), gradients clipped to
norm 1, on a fixed batch of random tokens, next-token cross-entropy over all positions; one
warm-up step, then STEPS timed. Prints one JSON object (the same fields as
transformers_train.py: tokens/s, seconds per step, the share of the threads busy, versions),
the losses to stderr.

    python benches/modelpy_train.py configs/compare-cpu --model-py DIR --threads 2 --batch 8 --steps 4

DIR holds model.py and kernel.py (model.py imports kernel.py, which imports triton; the
f32 path never calls its kernels), e.g. `inference/` of a clone of the repository. They are
loaded from there at run time and not changed; nothing of them is kept in v3lab.

model.py is inference code; what this script does to train it, all of it outside model.py:
- dtype: `Transformer.__init__` sets `Linear.dtype` to bf16 for every Linear but the head,
  so the model is built and then cast with `.float()`; every parameter is asserted f32.
  (The complex64 `freqs_cis` buffer and the f32 caches are unchanged by the cast.)
- weights: model.py leaves them `torch.empty` (a checkpoint fills them), so they are
  initialised as transformers initialises DeepseekV3ForCausalLM: every matrix (embedding,
  linears, gate) normal(0, 0.02), RMSNorm weights 1, the gate bias (only at dim 7168) 0.
- forward: `Transformer.forward` runs under `torch.inference_mode()` and returns the last
  position's logits only, so the training forward is written here with model.py's own
  modules, in its order: embed → each Block(h, start_pos=0, freqs_cis[:seq], causal mask
  built as model.py builds it) → norm → head over all positions. Block, MLA, MoE, Gate,
  Expert, MLP, RMSNorm and the rotary embedding run unchanged.
- caches: MLA writes this step's latent kv and rotary key (attn_impl "absorb", model.py's
  default; k/v for "naive") into registered buffers and attends over those, so autograd
  goes through the buffers; with max_batch_size = batch and seq = max_seq_len the whole
  buffer is rewritten each step. Before each step the buffers are detached from the last
  step's graph and zeroed (else the second backward reaches the freed first graph).
- Gate: its sigmoid scores are masked in place (`masked_fill_`, groups not kept) while the
  sigmoid's backward still needs them, which autograd refuses. Gate.forward runs under a
  saved-tensor hook that keeps a copy of each tensor it saves for backward (Gate's only:
  its linear's input and weight, the sigmoid output), so the math is unchanged; the cost
  is copies of the [tokens, experts] scores and the gate's input per MoE layer and step.
- the gate is trained through its weights as model.py computes them (gathered sigmoid
  scores, normalised, × route_scale); no auxiliary loss and no bias update (model.py has
  neither, nor has transformers' trainer); model.py has no MTP module, so a config with
  MTP layers is refused.
- world_size 1, no torch.distributed; `--attn-impl` may set model.py's module-level
  `attn_impl` ("absorb" by default, as model.py has it).
- if triton is missing, `kernel` is replaced by a stub whose functions raise: model.py
  imports them, and calls them only for fp8 weights.
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import pathlib
import sys
import time
import types

import torch
import torch.nn.functional as F


def model_args(dsv3, cfg: dict, batch: int):
    """v3lab config.json (ModelArgs names) or a Hugging Face config.json → model.py's ModelArgs."""
    hf_names = {  # transformers' DeepseekV3Config name → ModelArgs name
        "hidden_size": "dim", "intermediate_size": "inter_dim", "moe_intermediate_size": "moe_inter_dim",
        "num_hidden_layers": "n_layers", "first_k_dense_replace": "n_dense_layers",
        "num_attention_heads": "n_heads", "num_experts_per_tok": "n_activated_experts",
        "n_group": "n_expert_groups", "topk_group": "n_limited_groups",
        "routed_scaling_factor": "route_scale", "scoring_func": "score_func",
        "max_position_embeddings": "max_seq_len",
    }
    fields = {f.name for f in dataclasses.fields(dsv3.ModelArgs)}
    kw = {}
    for k, v in cfg.items():
        k = hf_names.get(k, k)
        if k in fields and k not in ("dtype", "scale_fmt", "max_batch_size"):
            kw[k] = v
    rope = cfg.get("rope_scaling") or {}
    for src, dst in (("factor", "rope_factor"), ("beta_fast", "beta_fast"), ("beta_slow", "beta_slow"),
                     ("mscale", "mscale"), ("original_max_position_embeddings", "original_seq_len")):
        if src in rope:
            kw[dst] = rope[src]
    n_mtp = cfg.get("n_mtp_layers", cfg.get("num_nextn_predict_layers", 0))
    assert n_mtp == 0, f"model.py has no MTP module; the config has {n_mtp} MTP layers"
    kw["max_batch_size"] = max(batch, kw.get("max_batch_size", 0))
    return dsv3.ModelArgs(**kw)


def load_model_py(folder: pathlib.Path):
    sys.path.insert(0, str(folder))  # model.py does `from kernel import ...`
    kernel_note = "kernel.py"
    try:
        import kernel  # noqa: F401
    except ImportError as e:
        if "triton" not in str(e):
            raise
        def absent(*_a, **_k):
            raise RuntimeError("kernel.py needs triton; only fp8 weights call it")
        sys.modules["kernel"] = types.SimpleNamespace(act_quant=absent, weight_dequant=absent, fp8_gemm=absent)
        kernel_note = "stub (no triton)"
    spec = importlib.util.spec_from_file_location("deepseek_v3_model", folder / "model.py")
    dsv3 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dsv3)
    return dsv3, kernel_note


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--model-py", required=True, type=pathlib.Path, help="folder holding model.py and kernel.py")
    ap.add_argument("--commit", default=None, help="the model.py commit, reported as it is")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--attn-impl", choices=("absorb", "naive"), default=None,
                    help="model.py's attn_impl (default: as model.py sets it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dsv3, kernel_note = load_model_py(args.model_py)
    if args.attn_impl:
        dsv3.attn_impl = args.attn_impl
    cfg = json.loads((pathlib.Path(args.config_dir) / "config.json").read_text())
    margs = model_args(dsv3, cfg, args.batch)
    assert args.seq <= margs.max_seq_len, f"seq {args.seq} > max_seq_len {margs.max_seq_len}"

    model = dsv3.Transformer(margs).float().train()
    bad = {n: p.dtype for n, p in model.named_parameters() if p.dtype != torch.float32}
    assert not bad, f"not float32: {bad}"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
            elif name.endswith("gate.bias"):
                p.zero_()
            # 1-D others are RMSNorm weights, torch.ones in model.py
    caches = [(m, n) for m in model.modules() if isinstance(m, dsv3.MLA)
              for n in ("kv_cache", "pe_cache", "k_cache", "v_cache") if n in m._buffers]

    def copy_saved(t):
        return t.clone()

    def gate_forward(orig):
        def forward(*a, **k):
            with torch.autograd.graph.saved_tensors_hooks(copy_saved, lambda t: t):
                return orig(*a, **k)
        return forward

    for m in model.modules():
        if isinstance(m, dsv3.Gate):
            m.forward = gate_forward(m.forward)

    def train_forward(tokens):
        seqlen = tokens.size(1)
        h = model.embed(tokens)
        freqs_cis = model.freqs_cis[:seqlen]
        mask = torch.full((seqlen, seqlen), float("-inf"), device=tokens.device).triu_(1) if seqlen > 1 else None
        for layer in model.layers:
            h = layer(h, 0, freqs_cis, mask)
        return model.head(model.norm(h))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    tokens = torch.randint(0, margs.vocab_size, (args.batch, args.seq))

    def step():
        with torch.no_grad():
            for m, n in caches:
                m._buffers[n].detach_().zero_()
        logits = train_forward(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step()]  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        losses.append(step())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"model.py losses (ln vocab = {math.log(margs.vocab_size):.3f}): "
          + " ".join(f"{l:.4f}" for l in losses), file=sys.stderr, flush=True)
    print(json.dumps({
        "trainer": "deepseek-v3 model.py",
        "tokens_per_sec": args.batch * args.seq * args.steps / wall,
        "seconds_per_step": wall / args.steps,
        "threads_busy": cpu / wall / args.threads,
        "torch": torch.__version__,
        "commit": args.commit,
        "attn_impl": dsv3.attn_impl,
        "kernel": kernel_note,
        "losses": losses,
    }), flush=True)


if __name__ == "__main__":
    main()
