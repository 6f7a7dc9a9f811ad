# SPDX-License-Identifier: MIT
"""Writes the crafted golden cases: tests/data/conform-8d (an 8-D SGD case that must PASS)
and tests/data/conform-bad (cases clopt-conform must refuse, each for one bound). Run from
the repository root: python3 fuzz/make_cases.py. Deterministic."""
import json, os, struct, shutil

def f32(path, vals):
    with open(path, "wb") as f:
        f.write(struct.pack("<%df" % len(vals), *vals))

def rnd(seed, n):
    out, x = [], seed
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(struct.unpack("<f", struct.pack("<f", ((x >> 40) / 2**24) - 0.5))[0])
    return out

def rt(x):  # round to float32
    return struct.unpack("<f", struct.pack("<f", x))[0]

def sgd_case(d, shape, steps=2, lr=0.125):
    os.makedirs(d, exist_ok=True)
    n = 1
    for s in shape:
        n *= s
    p0 = rnd(1, n)
    g = rnd(2, steps * n)
    p = list(p0)
    traj = []
    for t in range(steps):
        p = [rt(p[i] - rt(lr * g[t * n + i])) for i in range(n)]
        traj.append(list(p))
    f32(d + "/param0.f32", p0)
    f32(d + "/grads.f32", g)
    f32(d + "/param_1.f32", traj[0])
    f32(d + "/param_T.f32", traj[-1])
    tol = {"rtol": 1e-6, "atol": 1e-7}
    meta = {"case": os.path.basename(d), "optimizer": "sgd",
            "hyper": {"lr": lr, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                      "nesterov": False, "maximize": False},
            "steps": steps, "shape": shape, "tolerance": tol,
            "files": [
                {"name": "param0.f32", "shape": shape, "dtype": "float32", "role": "input"},
                {"name": "grads.f32", "shape": [steps] + shape, "dtype": "float32", "role": "input"},
                {"name": "param_1.f32", "shape": shape, "dtype": "float32", "role": "expected",
                 "tolerance": tol},
                {"name": "param_T.f32", "shape": shape, "dtype": "float32", "role": "expected",
                 "tolerance": tol}]}
    with open(d + "/meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    return meta

def set_meta(d, meta):
    with open(d + "/meta.json", "w") as f:
        json.dump(meta, f, indent=1)

root = "tests/data"
shutil.rmtree(root + "/conform-8d", ignore_errors=True)
shutil.rmtree(root + "/conform-bad", ignore_errors=True)
sgd_case(root + "/conform-8d/sgd_8d", [2, 1, 2, 1, 3, 1, 2, 1])

bad = root + "/conform-bad"
# a .f32 file whose size does not match its shape
m = sgd_case(bad + "/f32_wrong_size", [4])
with open(bad + "/f32_wrong_size/param_T.f32", "ab") as f:
    f.write(b"\0" * 4)
# more steps than the limit (no grads file of that size needed: refused first)
m = sgd_case(bad + "/steps_over_limit", [1])
m["steps"] = 1000001
set_meta(bad + "/steps_over_limit", m)
# more elements than the limit per tensor
m = sgd_case(bad + "/elements_over_limit", [4])
m["shape"] = [8193, 8192]
set_meta(bad + "/elements_over_limit", m)
# steps * elements beyond the memory bound
m = sgd_case(bad + "/memory_over_limit", [4])
m["steps"] = 1000000
m["shape"] = [512]
set_meta(bad + "/memory_over_limit", m)
# a files list beyond the limit
m = sgd_case(bad + "/files_over_limit", [4])
m["files"] += [{"name": "state_x%d.f32" % i, "shape": [4], "role": "expected"} for i in range(1100)]
set_meta(bad + "/files_over_limit", m)
# a name listed twice (found by sorting)
m = sgd_case(bad + "/files_duplicate", [4])
m["files"].append(dict(m["files"][3]))
set_meta(bad + "/files_duplicate", m)
# 9 dimensions
m = sgd_case(bad + "/shape_9d", [4])
m["shape"] = [1] * 8 + [4]
set_meta(bad + "/shape_9d", m)

# Seeds of fuzz/fuzz_golden.c: meta.json, NUL, then records u8 file | u16 length | bytes
# (file indexes as kNames there). From the small cases above.
NAMES = ["param0.f32", "grads.f32", "param_1.f32", "param_T.f32", "hess.f32",
         "state_exp_avg.f32", "state_exp_avg_sq.f32", "state_momentum_buffer.f32",
         "state_unlisted.f32", "index.json"]
seeds = "fuzz/corpus/fuzz_golden"
os.makedirs(seeds, exist_ok=True)
for case in ["conform-8d/sgd_8d", "conform-bad/f32_wrong_size", "conform-bad/files_duplicate",
             "conform-bad/shape_9d", "conform-bad/steps_over_limit"]:
    d = root + "/" + case
    blob = open(d + "/meta.json", "rb").read() + b"\0"
    for i, name in enumerate(NAMES):
        if os.path.exists(d + "/" + name):
            data = open(d + "/" + name, "rb").read()
            blob += bytes([i]) + struct.pack("<H", len(data)) + data
    with open(seeds + "/" + case.replace("/", "-"), "wb") as f:
        f.write(blob)
# an Adam case with state files, 2x3, 3 steps (values need not match: the loader is fuzzed)
d = "/tmp/clopt-adam-seed"
shutil.rmtree(d, ignore_errors=True)
m = sgd_case(d, [2, 3], steps=3)
m["optimizer"] = "adam"
m["hyper"] = {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
              "amsgrad": False}
for st in ["state_exp_avg.f32", "state_exp_avg_sq.f32"]:
    f32(d + "/" + st, rnd(3, 6))
    m["files"].append({"name": st, "shape": [2, 3], "dtype": "float32", "role": "expected"})
m["final_scalar_state"] = {"step": 3}
set_meta(d, m)
blob = open(d + "/meta.json", "rb").read() + b"\0"
for i, name in enumerate(NAMES):
    if os.path.exists(d + "/" + name):
        data = open(d + "/" + name, "rb").read()
        blob += bytes([i]) + struct.pack("<H", len(data)) + data
with open(seeds + "/adam-2x3", "wb") as f:
    f.write(blob)
shutil.rmtree(d)
