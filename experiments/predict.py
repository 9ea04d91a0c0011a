"""Classify a folder of images with a saved CIFAR-10 or FER2013 model.

    python -m experiments.predict --model=runs/X/runs/NAME/seed0/model --images=FOLDER
    python -m experiments.predict --model=... --images=FOLDER --labels=labels.csv [--out=DIR]

Prints one line per image: ``file<TAB>class name<TAB>probability`` of the most likely class. Any
image Pillow reads is converted to the model's input size and channels (--resize=stretch|crop).
With --labels (CSV ``file,label`` lines, label = class name or index; see
mlp.inference.read_labels) the evaluation report of the labelled images is printed too, and
written (Markdown, CSV, PNG) to --out if given. Errors (missing, corrupt or non-image model,
unreadable labels) print a message and exit with status 2.
"""

import sys
import tempfile
from pathlib import Path

from absl import app, flags

from mlp import cli
from mlp.data import images

_MODEL = flags.DEFINE_string(
  "model", None, "Saved model: prefix, .json/.npz file or run folder.", required=True
)
_IMAGES = flags.DEFINE_string("images", None, "Folder of images (or one image).", required=True)
_LABELS = flags.DEFINE_string("labels", None, "CSV of 'file,label' lines: also report accuracy.")
_OUT = flags.DEFINE_string("out", None, "Folder for the report files (with --labels).")
_RESIZE = flags.DEFINE_enum(
  "resize", "stretch", list(images.RESIZE_MODES), "stretch: whole image; crop: centre crop."
)


@cli.friendly_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mlp import inference, report  # (jax: after the flags, so that --help is quick)

  lm = inference.load_model(_MODEL.value)
  size, channels = inference.require_image_model(lm)
  labels = inference.read_labels(_LABELS.value, lm.class_names) if _LABELS.value else None
  x, names = images.load_folder(_IMAGES.value, size=size, channels=channels, resize=_RESIZE.value)
  y = inference.match_labels(names, labels, _LABELS.value) if labels is not None else None
  probs = inference.predict_images(lm, x)
  pred = probs.argmax(1)
  for name, k, p in zip(names, pred, probs, strict=True):
    print(f"{name}\t{lm.class_names[k]}\t{p[k]:.4f}")
  if labels is None:
    return
  ignored = sorted(set(labels) - set(names))
  if ignored:
    print(
      f"note: {len(ignored)} labelled file(s) not among the images: {', '.join(ignored[:5])}",
      file=sys.stderr,
    )
  title = f"{lm.model.meta.get('run', lm.path.name)} on {Path(_IMAGES.value).name}"
  if _OUT.value:
    paths = report.evaluation_report(_OUT.value, y, probs, lm.class_names, title=title)
    print(f"\n{paths['report'].read_text()}")
    print(f"report written to {paths['report'].parent}")
  else:
    with tempfile.TemporaryDirectory() as tmp:
      paths = report.evaluation_report(tmp, y, probs, lm.class_names, title=title)
      print(f"\n{paths['report'].read_text()}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
