"""transformers' greedy `generate` on a checkpoint folder, batch 1, timed as v3lab times
its own: decode tokens/s = (N - 1) / (time of N new tokens - time of 1 new token), so the
prefill is excluded. Prints one JSON object per prompt.

    python benches/transformers_generate.py DIR --threads 2 --new-tokens 128 --prompt TEXT...
"""

import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", nargs="+", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32).eval()

    def timed(ids, n):
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start, out[0, ids.shape[1]:].tolist()

    for prompt in args.prompt:
        ids = tok(prompt, return_tensors="pt").input_ids
        timed(ids, 4)  # warm-up
        best = None
        for _ in range(args.repeats):
            t1, _ = timed(ids, 1)
            tn, new = timed(ids, args.new_tokens)
            rate = (args.new_tokens - 1) / (tn - t1)
            best = rate if best is None else max(best, rate)
        print(json.dumps({
            "prompt_tokens": ids.shape[1], "new_tokens": len(new), "decode_tokens_per_sec": best, "ids": new,
            "torch": torch.__version__, "transformers": transformers.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
