"""Hugging Face transformers integration (imports transformers): ``ProvCallback``.

    from prov4torch.hf import ProvCallback
    trainer = Trainer(model, args, callbacks=[ProvCallback(experiment="bert")])
"""

from .autolog.hf import ProvCallback

__all__ = ["ProvCallback"]
