"""A small instrumented training run: an MLP on synthetic MNIST-shaped data, on the CPU.

    python examples/quickstart.py [--epochs 2] [--out DIR]

Writes <out>/quickstart/<run_id>/rank-0.prov.json (W3C PROV-JSON) with its metrics
sidecar, and prints where. No download, no GPU needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prov4torch


def synthetic_digits(n: int, seed: int) -> TensorDataset:
    """28x28 'images' whose class is encoded in a bright 3x3 patch: learnable in seconds."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for i, y in enumerate(labels.tolist()):
        r, c = divmod(y, 4)
        images[i, 0, 4 + 6 * r : 7 + 6 * r, 4 + 6 * c : 7 + 6 * c] = 1.0
    return TensorDataset(images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="output root (default: PROV4TORCH_DIR or a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.gettempdir()) / "prov4torch-quickstart"

    torch.manual_seed(0)
    train, val = synthetic_digits(2048, seed=1), synthetic_digits(512, seed=2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    with prov4torch.start_run(experiment="quickstart", out_dir=out, region="eu-west-1", purpose="research",
                              policy="default") as run:
        prov4torch.log_params({"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                               "optimizer": "SGD", "momentum": 0.9})
        tags = {"dataset_id": "synthetic-digits", "origin_country": "DE", "jurisdiction": "EU",
                "personal_data": False, "consent_scope": ["training", "validation", "research"], "license": "CC0-1.0",
                "consent_expires": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}
        prov4torch.log_dataset(train, name="synthetic-digits-train", **tags)
        prov4torch.log_dataset(val, name="synthetic-digits-val", role="validation", **tags)
        step = 0
        for epoch in range(args.epochs):
            model.train()
            for x, y in DataLoader(train, batch_size=args.batch_size, shuffle=True):
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                prov4torch.log_metric("loss", loss.detach(), step=step)
                step += 1
            model.eval()
            with torch.no_grad():
                xs, ys = val.tensors
                acc = (model(xs).argmax(1) == ys).float().mean()
            prov4torch.log_metric("accuracy", acc, step=epoch, context="validation")
            prov4torch.log_model(model, name="mlp", epoch=epoch)
            print(f"epoch {epoch}: validation accuracy {float(acc):.3f}")
    print(f"status {run.status}; provenance written to {run.prov_path}")
    print(f"audit it: prov4torch check {run.prov_path} --policy default")


if __name__ == "__main__":
    main()
