"""The two ceilings every GPU figure is judged against, measured with PyTorch on the GPU machine:
device-to-device copy bandwidth (bytes read + written) and a large dense bf16 matmul (cuBLAS).
Prints `copy_gbs=<x>` and `matmul_tflops=<y>` lines (random data, median of timed runs)."""
import torch

def median_ms(fn, warmup=3, iters=20):
    for _ in range(warmup):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(start, end):
        s.record(); fn(); e.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(start, end))
    return times[len(times) // 2]

n = 1 << 29  # 1 GiB of bf16
src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
dst = torch.empty_like(src)
ms = median_ms(lambda: dst.copy_(src))
print(f"copy_gbs={2 * src.numel() * 2 / (ms * 1e-3) / 1e9:.1f}")
del src, dst
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
ms = median_ms(lambda: a @ b)
print(f"matmul_tflops={2 * 8192**3 / (ms * 1e-3) / 1e12:.1f}")
print(f"device={torch.cuda.get_device_name()}")
