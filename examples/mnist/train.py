"""An ordinary PyTorch MNIST training script: a small CNN, train/validation/test splits, a
checkpoint per epoch; single process or DDP under torchrun (gloo: the example trains on the CPU).

    python examples/mnist/train.py [--data-dir DIR] [--epochs 2] [--out checkpoints/]
    prov4torch run examples/mnist/train.py -- ...    # the same, with its provenance recorded

Data: real MNIST in its IDX format from --data-dir (train-images-idx3-ubyte[.gz] and
friends), else torchvision's download when it is installed and online, else the UCI
handwritten digits that scikit-learn ships (1,797 8x8 images, upscaled to 28x28) —
the script says which one it used.

The only prov4torch lines: when a run is active (under `prov4torch run`), the raw files and the
datasets get their governance tags (data-tags.toml, track); without one, this is plain PyTorch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import struct
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, random_split

import prov4torch

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# What we know about the data (recorded only under prov4torch; adapt to your data's real terms).
MNIST_TAGS = {"dataset_id": "mnist", "origin_country": "US", "jurisdiction": "US", "personal_data": False,
              "consent_scope": ["training", "validation", "testing", "research"], "license": "CC-BY-SA-3.0",
              "consent_expires": dt.datetime(2030, 12, 31, tzinfo=dt.UTC)}
DIGITS_TAGS = {"dataset_id": "uci-optdigits", "origin_country": "TR", "jurisdiction": "TR", "personal_data": False,
               "consent_scope": ["training", "validation", "testing", "research"], "license": "CC-BY-4.0",
               "consent_expires": dt.datetime(2030, 12, 31, tzinfo=dt.UTC)}


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file (optionally gzipped) as a tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        zero, dtype, ndim = struct.unpack(">HBB", fh.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path}: not an IDX file of unsigned bytes")
        shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
        data = fh.read()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(shape)


def find(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz", data_dir / "MNIST" / "raw" / stem):
        if candidate.exists():
            return candidate
    return None


def load_mnist_idx(data_dir: Path) -> tuple[TensorDataset, TensorDataset] | None:
    paths = {split: [find(data_dir, s) for s in stems] for split, stems in MNIST_FILES.items()}
    if not all(p for pair in paths.values() for p in pair):
        return None
    out = []
    for split in ("train", "test"):
        images, labels = (read_idx(p) for p in paths[split])  # type: ignore[arg-type]
        x = images.float().div(255).sub(0.1307).div(0.3081).unsqueeze(1)
        out.append(TensorDataset(x, labels.long()))
    return out[0], out[1]


def load_torchvision(data_dir: Path) -> tuple[TensorDataset, TensorDataset] | None:
    try:
        from torchvision import datasets  # type: ignore[import-not-found]

        datasets.MNIST(str(data_dir), train=True, download=True)
        datasets.MNIST(str(data_dir), train=False, download=True)
    except Exception:  # noqa: BLE001 - not installed, or offline
        return None
    return load_mnist_idx(data_dir)


def load_uci_digits() -> tuple[TensorDataset, TensorDataset]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("no MNIST found and scikit-learn is not installed: give --data-dir with MNIST's IDX files, "
                 "or pip install scikit-learn")
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss = correct = n = 0.0
    for x, y in loader:
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    return loss / max(n, 1), correct / max(n, 1)


def main() -> None:
    p = argparse.ArgumentParser(description="Train a small CNN on MNIST (or the UCI digits).")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DIR", "data/mnist")))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--limit", type=int, default=0, help="use at most this many training samples (0: all)")
    p.add_argument("--out", type=Path, default=Path("checkpoints"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # the model and batches stay on the CPU (nccl would need CUDA tensors)
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(args.seed)

    if prov4torch.active_run() is not None:  # under `prov4torch run`: the raw files' governance, declared
        prov4torch.load_tags(Path(__file__).with_name("data-tags.toml"))
    loaded = load_mnist_idx(args.data_dir) or load_torchvision(args.data_dir)
    if loaded is not None:
        source, tags = f"MNIST (IDX files in {args.data_dir})", MNIST_TAGS
    else:
        loaded, source, tags = load_uci_digits(), "UCI handwritten digits from scikit-learn, upscaled to 28x28 " \
                                                  "(no MNIST in --data-dir)", DIGITS_TAGS
    train_full, test = loaded
    if args.limit:
        train_full = TensorDataset(*(t[: args.limit] for t in train_full.tensors))
    n_val = max(1, len(train_full) // 10)
    train, val = random_split(train_full, [len(train_full) - n_val, n_val],
                              generator=torch.Generator().manual_seed(args.seed))
    train = TensorDataset(*(t[train.indices] for t in train_full.tensors))
    val = TensorDataset(*(t[val.indices] for t in train_full.tensors))
    if rank == 0:
        print(f"data: {source}: {len(train)} train, {len(val)} validation, {len(test)} test", flush=True)

    sampler = DistributedSampler(train, seed=args.seed) if distributed else None
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler)
    val_loader = DataLoader(val, batch_size=256)
    test_loader = DataLoader(test, batch_size=256)
    if prov4torch.active_run() is not None:  # under `prov4torch run`: say what the data is
        train_loader = prov4torch.track(train_loader, name="digits-train", role="training", **tags)
        val_loader = prov4torch.track(val_loader, name="digits-validation", role="validation", **tags)
        test_loader = prov4torch.track(test_loader, name="digits-test", role="testing", **tags)

    model: nn.Module = Net()
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    args.out.mkdir(parents=True, exist_ok=True)
    step = 0
    for epoch in range(1, args.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            if prov4torch.active_run() is not None:
                prov4torch.log_metric("loss", loss.detach(), step=step)
        val_loss, val_acc = evaluate(model, val_loader)
        if prov4torch.active_run() is not None:
            prov4torch.log_metrics({"loss": val_loss, "accuracy": val_acc}, step=epoch, context="validation")
        if rank == 0:
            state = (model.module if distributed else model).state_dict()
            torch.save(state, args.out / f"mnist-epoch{epoch}.pt")
            print(f"epoch {epoch}: validation loss {val_loss:.4f}, accuracy {val_acc:.3f}", flush=True)
    test_loss, test_acc = evaluate(model, test_loader)
    if prov4torch.active_run() is not None:
        prov4torch.log_metrics({"loss": test_loss, "accuracy": test_acc}, context="testing")
    if rank == 0:
        print(f"test: loss {test_loss:.4f}, accuracy {test_acc:.3f}", flush=True)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
