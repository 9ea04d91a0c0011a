"""The study configs live in the package, mlp/configs/ (``from mlp.configs import har``), so that an
installed mlp has them. Each file here stands in for one of them, so that the README's commands
(``--config=configs/har.py``) and ``from configs import har`` keep working in a checkout."""
