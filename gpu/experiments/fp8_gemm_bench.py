"""cuBLASLt's FP8 GEMM through PyTorch, on the shapes `gpu/tests/perf.rs` times v3lab's own
FP8 kernel on (M×N×K: a [M, K] · w [N, K]ᵀ), for the comparison `gpu/PERF.md` records.

    python3 gpu/experiments/fp8_gemm_bench.py

Prints one Markdown table: TFLOP/s of `torch._scaled_mm` (E4M3, f32 output) with one scale
per tensor, fast accumulation on and off; with 1×128 / 128×128 block scales where this
PyTorch and cuBLASLt support them (DeepSeek-V3's recipe); and bf16 `torch.mm` for scale.
"""
import torch

SHAPES = [(4096, 4096, 4096), (4096, 7168, 2048), (128, 7168, 2048)]


def tflops(fn, m, n, k, iters=50):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return 2 * m * n * k * iters / (start.elapsed_time(end) * 1e-3) / 1e12


def block_scaled(a, w, m, n, k):
    """A 1×128 (activations) by 128×128 (weights) block-scaled GEMM, if supported; else why not."""
    scale_a = torch.ones(k // 128, m, device="cuda").t()  # [M, K/128], M-major as cuBLASLt wants
    scale_w = torch.ones(n // 128, k // 128, device="cuda")
    for sw in (scale_w.t(), scale_w):
        try:
            fn = lambda: torch._scaled_mm(a, w.t(), scale_a=scale_a, scale_b=sw, out_dtype=torch.bfloat16)
            fn()
            return fn
        except Exception as e:  # noqa: BLE001 - any refusal means "not supported here"
            reason = str(e).splitlines()[0][:80]
    return reason


def main():
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}\n")
    print("| GEMM M×N×K | FP8 per-tensor, fast accum | FP8 per-tensor | FP8 1×128/128×128 blocks | bf16 |")
    print("|---|---:|---:|---:|---:|")
    one = torch.ones((), device="cuda")
    for m, n, k in SHAPES:
        a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
        w = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
        cells = []
        for fast in (True, False):
            fn = lambda: torch._scaled_mm(a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast)
            cells.append(f"{tflops(fn, m, n, k):.0f} TFLOP/s")
        blocks = block_scaled(a, w, m, n, k)
        cells.append(f"{tflops(blocks, m, n, k):.0f} TFLOP/s" if callable(blocks) else f"unsupported: {blocks}")
        ab, wb = a.to(torch.bfloat16), w.to(torch.bfloat16)
        cells.append(f"{tflops(lambda: torch.mm(ab, wb.t()), m, n, k):.0f} TFLOP/s")
        print(f"| {m}×{n}×{k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
