"""One rank of `prov4torch run --nproc-per-node N`: run the script under a managed run.

    python -m torch.distributed.run ... -m prov4torch_cli.worker [-m] TARGET [ARGS]...

Everything else (run id, output directory, policy, region...) arrives in PROV4TORCH_*.
"""

from __future__ import annotations

import sys

from prov4torch.autolog.runner import run_script
from prov4torch.errors import Prov4TorchError


def main(argv: list[str]) -> int:
    module = bool(argv) and argv[0] == "-m"
    if module:
        argv = argv[1:]
    if not argv:
        print("Error: prov4torch worker: no script given", file=sys.stderr)
        return 2
    try:
        return run_script(argv[0], argv[1:], module=module).exit_code
    except Prov4TorchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
