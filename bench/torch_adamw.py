#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch's AdamW at the sizes of clopt-bench, for the same table (ci/gpu-check.sh).

    python3 bench/torch_adamw.py --sizes 2^20,2^24,2^28 --reps 30 --json out.json --csv out.csv

One parameter tensor of n float32 values with its gradient (as clopt-bench's one tensor),
torch.optim.AdamW with its defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 1e-2,
as clopt's AdamW) run as `fused=True` (one multi-tensor CUDA kernel) and `foreach=True`
(the multi-tensor chain). Each timed step is bracketed by two CUDA events on the current
stream and the median of the repetitions is reported, after warm-up steps that also create
the state. GB/s = 28 * n / ms, the bytes clopt-bench counts for AdamW (read θ, g, m, v;
write θ, m, v). As in clopt-bench, a step whose arrays take at least half of the GPU's L2
cache is timed cold: a buffer of the L2's size is written before every timed step.

The events include the host's launch of the step (an empty GPU waits for it), which matters
only at small n. --device cpu times with the wall clock, for trying the script without a GPU
(fused=True needs CUDA in older PyTorch releases: that row then says unsupported).
Exit status: 0 when every implementation ran at every size, 1 otherwise, 2 for bad options.
"""
import argparse
import json
import re
import statistics
import sys
import time

BYTES_PER_PARAM = 28
IMPLS = ("fused", "foreach")


def parse_count(text):
    """1048576, 2^20, 1M, 64K, 1G (powers of 1024), as clopt-bench --sizes."""
    m = re.fullmatch(r"(\d+)(?:\^(\d+)|([kKmMgG]))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1048576, 2^20, 1M)")
    v = int(m.group(1))
    if m.group(2):
        v = v ** int(m.group(2))
    elif m.group(3):
        v *= 1024 ** " kmg".index(m.group(3).lower())
    if v < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return v


def show_n(n):
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def measure(torch, impl, n, args, dev, flush):
    """Median and minimum ms of one AdamW step over n parameters, and the final θ."""
    gen = torch.Generator(device=dev).manual_seed(1)
    p = torch.nn.Parameter(torch.rand(n, generator=gen, device=dev) * 2 - 1)
    p.grad = torch.rand(n, generator=gen, device=dev) - 0.5
    kw = {"fused": True} if impl == "fused" else {"foreach": True}
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **kw)
    cuda = dev.type == "cuda"
    for _ in range(args.warmup):
        opt.step()
    times = []
    if cuda:
        torch.cuda.synchronize()
        start = [torch.cuda.Event(enable_timing=True) for _ in range(args.reps)]
        end = [torch.cuda.Event(enable_timing=True) for _ in range(args.reps)]
        for i in range(args.reps):
            if flush is not None:
                flush.fill_(float(i))
            start[i].record()
            opt.step()
            end[i].record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in zip(start, end)]
    else:
        for _ in range(args.reps):
            t0 = time.perf_counter()
            opt.step()
            times.append((time.perf_counter() - t0) * 1e3)
    theta = p.detach().clone()
    del opt, p
    return statistics.median(times), min(times), theta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2^20,2^22,2^24,2^26,2^28",
                    help="parameters per step, comma-separated (default 2^20,...,2^28)")
    ap.add_argument("--impls", default="fused,foreach", help="fused,foreach (default both)")
    ap.add_argument("--reps", type=int, default=30, help="timed steps, median reported (30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them (5)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--no-flush", action="store_true", help="never evict the L2 cache")
    ap.add_argument("--json", help="write the rows as a JSON array")
    ap.add_argument("--csv", help="write the rows as CSV")
    args = ap.parse_args()
    try:
        sizes = [parse_count(s) for s in args.sizes.split(",") if s]
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    impls = [s for s in args.impls.split(",") if s]
    if not sizes or any(i not in IMPLS for i in impls) or args.reps < 1 or args.warmup < 0:
        ap.error("need sizes, --impls from fused,foreach, --reps >= 1, --warmup >= 0")

    try:
        import torch
    except ImportError as e:
        print(f"torch_adamw.py: no PyTorch here ({e})", file=sys.stderr)
        return 1
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"torch_adamw.py: PyTorch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 1
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        dev_name = props.name
        l2 = getattr(props, "L2_cache_size", 0) or 0
        timing = "CUDA events around each step"
    else:
        dev_name, l2, timing = "cpu", 0, "wall clock (--device cpu)"
    print(f"torch_adamw.py: PyTorch {torch.__version__}, device {dev_name}, AdamW "
          f"({', '.join(impls)}), {BYTES_PER_PARAM} bytes/param, median of {args.reps} after "
          f"{args.warmup} warm-up; {timing}; L2 {l2 / 2**20:.0f} MiB"
          f"{'' if l2 else ' (unknown: never flushed)'}")
    flush = None
    if l2 and not args.no_flush:
        flush = torch.empty(l2 // 4, dtype=torch.float32, device=dev)

    rows, failed = [], 0
    print(f"{'impl':<14}{'n':>8}{'ms':>11}{'ms_min':>11}{'GB/s':>10}  note")
    for n in sizes:
        thetas = {}
        for impl in impls:
            cold = flush is not None and BYTES_PER_PARAM * n >= l2 // 2
            row = {"impl": "torch_" + impl, "n": n, "ms": None, "ms_min": None, "gbps": None,
                   "bytes_per_param": BYTES_PER_PARAM, "reps": args.reps,
                   "warmup": args.warmup, "cold": cold, "max_diff_fused": None,
                   "device": dev_name, "torch": torch.__version__, "error": None}
            try:
                ms, ms_min, thetas[impl] = measure(torch, impl, n, args, dev,
                                                   flush if cold else None)
                row.update(ms=ms, ms_min=ms_min, gbps=BYTES_PER_PARAM * n / ms / 1e6)
            except (RuntimeError, ValueError, TypeError) as e:  # unsupported, out of memory
                row["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                failed += 1
            if impl != "fused" and "fused" in thetas and impl in thetas:
                row["max_diff_fused"] = float((thetas[impl] - thetas["fused"]).abs().max())
            rows.append(row)
            if row["error"]:
                print(f"{row['impl']:<14}{show_n(n):>8}{'-':>11}{'-':>11}{'-':>10}  "
                      f"failed: {row['error']}")
            else:
                note = "cold" if cold else "warm"
                if row["max_diff_fused"] is not None:
                    note += f", max |theta - fused theta| {row['max_diff_fused']:.2e}"
                print(f"{row['impl']:<14}{show_n(n):>8}{row['ms']:>11.4f}{row['ms_min']:>11.4f}"
                      f"{row['gbps']:>10.1f}  {note}")
            sys.stdout.flush()
        thetas.clear()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
            f.write("\n")
    if args.csv:
        keys = list(rows[0].keys()) if rows else []
        with open(args.csv, "w") as f:
            f.write(",".join(keys) + "\n")
            for r in rows:
                f.write(",".join("" if r[k] is None else str(r[k]).replace(",", ";")
                                 for k in keys) + "\n")
    if failed:
        print(f"torch_adamw.py: {failed} measurement(s) failed (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
