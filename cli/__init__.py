"""The ``prov4torch`` command line (installed as the ``prov4torch_cli`` package)."""
