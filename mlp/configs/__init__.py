"""The study configs: one ``get_config(arg)`` per study (``arg``: a variant such as ``quick``) on
the shared defaults of base.py. Load one with ``--config=configs/har.py`` in a checkout, or
``--config=har.py`` anywhere (mlp.cli finds the packaged file), or with
``from mlp.configs import har``."""
