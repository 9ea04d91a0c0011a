"""Classify a folder of images with a saved CIFAR-10 or FER2013 model.

    python -m experiments.predict --model=runs/X/runs/NAME/seed0/model --images=FOLDER
    python -m experiments.predict --model=... --images=FOLDER --format=json --top_k=3
    python -m experiments.predict --model=... --images=FOLDER --labels=labels.csv [--out=DIR]

Writes the predictions to stdout, one row per image after a header: ``file``, ``class``,
``probability`` of the most likely class (with --top_k=k: ``class_1, probability_1, ...,
class_k, probability_k``), as TSV, CSV or one JSON array (--format). Images are read and
classified --batch_size at a time, so a folder of any size streams. Any image Pillow reads is
converted to the model's input size and channels (--resize=stretch|crop); unreadable files are
skipped with a warning. With --labels (CSV ``file,label`` lines, label = class name or index; see
mlp.inference.read_labels) the evaluation report of the labelled images goes to the folder --out
(Markdown, CSV, PNG; a report already there is replaced, each file atomically), or to stderr: never
into the predictions. An --out that exists and is not a folder is refused before anything is
predicted. Images of more than --max_pixels pixels are skipped before they are decoded. Errors
(missing, corrupt or non-image model, unreadable labels, no readable image, an unusable --out)
print a message and exit with status 2.
"""

import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import numpy as np
from absl import app, flags

from mlp import cli
from mlp.data import images

_MODEL = flags.DEFINE_string(
  "model", None, "Saved model: prefix, .json/.npz file or run folder.", required=True
)
_IMAGES = flags.DEFINE_string("images", None, "Folder of images (or one image).", required=True)
_FORMAT = flags.DEFINE_enum(
  "format", "tsv", ["tsv", "csv", "json"], "Predictions as TSV or CSV with a header, or JSON."
)
_TOP_K = flags.DEFINE_integer("top_k", 1, "Classes per image, most likely first.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 256, "Images read and classified at a time (memory stays bounded).", lower_bound=1
)
_LABELS = flags.DEFINE_string("labels", None, "CSV of 'file,label' lines: also report accuracy.")
_OUT = flags.DEFINE_string(
  "out",
  None,
  "Folder for the report of --labels, created if missing; a report already in it is replaced "
  "(each file atomically). A path that exists and is not a folder is refused before predicting. "
  "Default: the report goes to stderr.",
)
_MAX_PIXELS = flags.DEFINE_integer(
  "max_pixels",
  images.MAX_PIXELS,
  "Skip (with a warning) images of more pixels than this, before decoding them.",
  lower_bound=1,
)
_RESIZE = flags.DEFINE_enum(
  "resize", "stretch", list(images.RESIZE_MODES), "stretch: whole image; crop: centre crop."
)


class PredictionWriter:
  """Rows of (file, top-k classes and probabilities) as TSV, CSV or one JSON array."""

  def __init__(self, stream: TextIO, fmt: str, k: int, class_names: tuple[str, ...]):
    self.stream, self.fmt, self.k, self.class_names = stream, fmt, k, class_names
    self.rows = 0
    self.csv = csv.writer(stream, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")

  def header(self) -> list[str]:
    if self.k == 1:
      return ["file", "class", "probability"]
    return ["file"] + [f"{c}_{i}" for i in range(1, self.k + 1) for c in ("class", "probability")]

  def write(self, names: list[str], probs: np.ndarray) -> None:
    top = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
    for name, p, ks in zip(names, probs, top, strict=True):
      if self.fmt == "json":
        tops = [{"class": self.class_names[k], "probability": round(float(p[k]), 6)} for k in ks]
        sep = "[\n" if not self.rows else ",\n"
        self.stream.write(sep + json.dumps({"file": name, "top": tops}))
      else:
        if not self.rows:
          self.csv.writerow(self.header())
        cells = [x for k in ks for x in (self.class_names[k], f"{p[k]:.4f}")]
        self.csv.writerow([name, *cells])
      self.rows += 1
    self.stream.flush()

  def close(self) -> None:
    if self.fmt == "json":
      self.stream.write("\n]\n" if self.rows else "[]\n")


@cli.friendly_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mlp import inference, report  # (jax: after the flags, so that --help is quick)

  if _OUT.value and Path(_OUT.value).exists() and not Path(_OUT.value).is_dir():
    raise ValueError(
      f"--out {_OUT.value} is a file; --out names a folder for the report (created if missing): "
      "choose another path"
    )
  lm = inference.load_model(_MODEL.value)
  size, channels = inference.require_image_model(lm)
  labels = inference.read_labels(_LABELS.value, lm.class_names) if _LABELS.value else None
  writer = PredictionWriter(
    sys.stdout, _FORMAT.value, min(_TOP_K.value, len(lm.class_names)), lm.class_names
  )
  names, probs = [], []
  for x, batch in images.iter_folder(
    _IMAGES.value,
    size=size,
    channels=channels,
    resize=_RESIZE.value,
    batch_size=_BATCH_SIZE.value,
    max_pixels=_MAX_PIXELS.value,
  ):
    p = inference.predict_images(lm, x)
    writer.write(batch, p)
    if labels is not None:  # kept for the report: (n, classes) floats, not the images
      names += batch
      probs.append(p)
  writer.close()
  if labels is None:
    return
  y = inference.match_labels(names, labels, _LABELS.value)
  ignored = sorted(set(labels) - set(names))
  if ignored:
    print(
      f"note: {len(ignored)} labelled file(s) not among the images: {', '.join(ignored[:5])}",
      file=sys.stderr,
    )
  title = f"{lm.model.meta.get('run', lm.path.name)} on {Path(_IMAGES.value).name}"
  probs = np.concatenate(probs)
  if _OUT.value:
    paths = report.evaluation_report(_OUT.value, y, probs, lm.class_names, title=title)
    print(f"report written to {paths['report']}", file=sys.stderr)
  else:
    with tempfile.TemporaryDirectory() as tmp:
      paths = report.evaluation_report(tmp, y, probs, lm.class_names, title=title)
      print(f"\n{paths['report'].read_text()}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
