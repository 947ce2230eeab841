"""Zero-code capture: the torch patches installed for one run, and the ``prov4torch run`` runner."""
