"""PyTorch Lightning integration (imports Lightning): ``ProvLogger`` and ``ProvLightningCallback``.

    from prov4torch.lightning import ProvLogger
    trainer = Trainer(logger=ProvLogger(experiment="mnist"))
"""

from .autolog.lightning import ProvLightningCallback, ProvLogger

__all__ = ["ProvLightningCallback", "ProvLogger"]
