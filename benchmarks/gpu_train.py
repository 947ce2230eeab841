"""A small CUDA training script for the GPU checks (benchmarks/gpu_check.sh): an ordinary loop whose one
prov4torch call logs the loss as a CUDA tensor; about --seconds of work, so that NVML and codecarbon both measure.

    prov4torch run benchmarks/gpu_train.py -- --seconds 12 --out ckpt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prov4torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--out", type=Path, default=Path("ckpt"))
    args = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(4096, 1024, generator=g), torch.randint(0, 10, (4096,), generator=g))
    loader = DataLoader(data, batch_size=256, shuffle=True, generator=g)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                          nn.Linear(4096, 10)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if prov4torch.active_run() is not None:
                prov4torch.log_metric("loss", loss.detach(), step=step)  # a CUDA tensor, no sync
            step += 1
    torch.cuda.synchronize()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "model.pt")
    print(f"steps {step} final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
