"""Whole-process cost of `prov4torch run` on real training stacks, against plain `python`.

    python benchmarks/bench_frameworks.py [--pairs 3] [--scale 1] [--only lightning,hf,...]

For each client (an empty script, a plain loop, PyTorch Lightning, the Hugging Face Trainer, an accelerate
loop; tiny models on synthetic data, each a few seconds of CPU training at --scale 1), runs `python SCRIPT`
and `prov4torch run SCRIPT` in interleaved pairs (order alternating, so drift hits both) and prints the median
wall times, their ratio, and the extra seconds. The empty script's extra seconds are the fixed cost of
`prov4torch run` itself (interpreter start of the CLI, context capture, merge, summary); the rest of a client's
extra time is what recording its training cost. Absolute times vary between hosts: compare within one
invocation only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CLIENTS = {
    "empty": "import torch\n",
    "plain": """
        import torch
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(4096, 64); y = torch.randint(0, 10, (4096,))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
        for epoch in range(3 * SCALE):
            for xb, yb in loader:
                opt.zero_grad(); torch.nn.functional.cross_entropy(model(xb), yb).backward(); opt.step()
            torch.save(model.state_dict(), f"model-{epoch}.pt")
    """,
    "lightning": """
        import torch, pytorch_lightning as pl
        from torch.utils.data import DataLoader, TensorDataset
        torch.manual_seed(0)
        class Net(pl.LightningModule):
            def __init__(self, lr=0.01):
                super().__init__()
                self.save_hyperparameters()
                self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
            def training_step(self, batch, i):
                x, y = batch
                loss = torch.nn.functional.cross_entropy(self.net(x), y)
                self.log("train_loss", loss)
                return loss
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        x = torch.randn(4096, 64); y = torch.randint(0, 10, (4096,))
        trainer = pl.Trainer(max_epochs=3 * SCALE, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[pl.callbacks.ModelCheckpoint(dirpath="ckpts", save_last=True)])
        trainer.fit(Net(), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    """,
    "hf": """
        import torch
        from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
        torch.manual_seed(0)
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32, num_labels=2)
        class Toy(torch.utils.data.Dataset):
            def __init__(self, n):
                g = torch.Generator().manual_seed(1)
                self.ids = torch.randint(1, 100, (n, 16), generator=g)
                self.labels = (self.ids[:, 0] > 50).long()
            def __len__(self):
                return len(self.labels)
            def __getitem__(self, i):
                return {"input_ids": self.ids[i], "labels": self.labels[i]}
        args = TrainingArguments(output_dir="out", num_train_epochs=2 * SCALE, per_device_train_batch_size=16,
                                 save_strategy="epoch", logging_steps=10, report_to=[], use_cpu=True, seed=0)
        trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Toy(1024))
        trainer.train()
        trainer.save_model("final")
    """,
    "accelerate": """
        import torch
        from accelerate import Accelerator
        from torch.utils.data import DataLoader, TensorDataset
        torch.manual_seed(0)
        acc = Accelerator(cpu=True)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(4096, 64); y = torch.randint(0, 10, (4096,))
        model, opt, loader = acc.prepare(model, opt, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
        for epoch in range(3 * SCALE):
            for xb, yb in loader:
                opt.zero_grad(); acc.backward(torch.nn.functional.cross_entropy(model(xb), yb)); opt.step()
        acc.save_state("state")
        acc.save_model(model, "final")
    """,
}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1, help="multiply the epochs of every client")
    ap.add_argument("--only", default=",".join(CLIENTS), help="comma-separated clients")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PL_DISABLE_FORK": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    cli = [sys.executable, "-m", "prov4torch_cli.app", "run"]
    print(f"{'client':<11} {'python s':>9} {'p4t run s':>10} {'ratio':>6} {'extra s':>8}")
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "script.py").write_text(f"SCALE = {args.scale}\n" + textwrap.dedent(CLIENTS[name]))
            plain, recorded = [], []
            timed([sys.executable, "script.py"], work, env)  # warm the page cache and compiled bytecode
            for k in range(args.pairs):
                order = ("python", "run") if k % 2 == 0 else ("run", "python")
                for which in order:
                    if which == "python":
                        plain.append(timed([sys.executable, "script.py"], work, env))
                    else:
                        recorded.append(timed([*cli, "--out", str(work / "runs"), "script.py"], work, env))
            p, r = statistics.median(plain), statistics.median(recorded)
            print(f"{name:<11} {p:>9.2f} {r:>10.2f} {r / p:>6.2f} {r - p:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
