"""Evaluation report of a saved model on one split of the data set it was trained on.

    python -m experiments.evaluate --model=runs/X/runs/NAME/seed0/model --split=test
    python -m experiments.evaluate --model=runs/X/runs/NAME/seed0 --split=PublicTest --out=DIR

The data set, its split options and the preprocessing statistics come from the saved model; the
report (Markdown, CSV, PNG; see mlp.report.evaluation_report) goes to --out (default: the model's
folder, eval/<split>-evaluate/, beside the study's own eval/<split>/, which it never overwrites).
"""

from pathlib import Path

from absl import app, flags

from mlp import cli
from mlp import data as data_lib

_MODEL = flags.DEFINE_string(
  "model", None, "Saved model: prefix, .json/.npz file or run folder.", required=True
)
_SPLIT = flags.DEFINE_string(
  "split",
  None,
  "train, val or a test split of the model's data set ("
  + "; ".join(f"{k}: {', '.join(e.test_splits)}" for k, e in data_lib.DATASETS.items())
  + "); default: the study's test split.",
)
_OUT = flags.DEFINE_string(
  "out",
  None,
  "Report folder (default: <model folder>/eval/<split>-evaluate, beside the study's eval/<split>).",
)
_DATA_DIR = cli.define_data_dir_flag()

flags.adopt_module_key_flags(cli)  # --help lists --data_dir and --strict_data


def default_out(folder: Path, split: str) -> Path:
  """Where a model's report goes without --out: beside the study's own report of the split."""
  return folder / "eval" / f"{split}-evaluate"


@cli.friendly_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mlp import inference, metrics, report  # (jax: after the flags, so that --help is quick)

  lm = inference.load_model(_MODEL.value)
  split = _SPLIT.value or (lm.model.config.get("report") or {}).get("test_split") or "test"
  x, y = inference.split_data(lm, split, _DATA_DIR.value)
  probs = inference.probabilities(lm, x)
  out = Path(_OUT.value) if _OUT.value else default_out(lm.path.parent, split)
  title = f"{lm.model.meta.get('run', lm.path.name)} on {lm.dataset} {split}"
  paths = report.evaluation_report(out, y, probs, lm.class_names, title=title)
  acc = metrics.topk_accuracy(probs, y, [1])[0] if len(y) else float("nan")
  print(f"{lm.dataset} {split}: {len(y)} samples, accuracy {acc:.4f}")
  print(f"report: {paths['report']}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
