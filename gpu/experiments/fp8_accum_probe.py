"""Measure how the GPU's FP8 GEMM accumulates, on v3lab's probe GEMMs.

    v3lab fp8 probe --out probe.safetensors                     # here: the inputs
    python3 fp8_accum_probe.py probe.safetensors measured.safetensors   # on the GPU machine
    v3lab fp8 fit --measurements measured.safetensors           # here: the fit

For every probe `k<K>.a` [M, K], `k<K>.b` [N, K] (E4M3 bit patterns as U8) it adds
`k<K>.c_fast` and `k<K>.c_slow`, F32 [M, N] = a · bᵀ from `torch._scaled_mm` with unit
scales, with and without `use_fast_accum`. Only PyTorch is needed (safetensors is read
and written by hand, so the file handling runs, and is checked, without it); the output is
written to a temporary file, then renamed.
"""
import json
import os
import struct
import sys


def read(path):
    """{name: (dtype, shape, raw little-endian bytes)} of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for name, info in header.items():
        if name != "__metadata__":
            start, end = info["data_offsets"]
            tensors[name] = (info["dtype"], info["shape"], data[8 + n + start : 8 + n + end])
    return tensors


def write(path, tensors):
    """Writes {name: (dtype, shape, raw bytes)} as safetensors, through a temporary file."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, blob) in sorted(tensors.items()):
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    os.replace(path + ".tmp", path)


def f32_tensor(values, shape):
    return ("F32", shape, struct.pack(f"<{len(values)}f", *values))


def main(inputs, output):
    import torch

    tensors = read(inputs)
    one = torch.ones((), device="cuda", dtype=torch.float32)
    out = dict(tensors)
    for name in sorted(tensors):
        if not name.endswith(".a"):
            continue
        stem = name[:-2]

        def fp8(key):
            dtype, shape, raw = tensors[key]
            if dtype != "U8":
                sys.exit(f"{inputs}: tensor {key}: dtype {dtype}, expected U8")
            codes = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(shape)
            return codes.cuda().view(torch.float8_e4m3fn)

        a, b = fp8(stem + ".a"), fp8(stem + ".b")
        for fast in (True, False):
            # b.t() is column-major [K, N], the layout _scaled_mm wants for its second operand.
            c = torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.float32, use_fast_accum=fast)
            out[f"{stem}.c_{'fast' if fast else 'slow'}"] = f32_tensor(c.cpu().flatten().tolist(), list(c.shape))
        print(f"{stem}: a {list(a.shape)}, b {list(b.shape)}")
    write(output, out)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}; wrote {output}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
