"""UCI HAR hyperparameter search over the same space as configs/fer2013_search.py.

Same model/train starting point, search space and :quick variant as the FER2013 search; only the
data set, the report and the default budget differ.

python -m experiments.search --config=configs/har_search.py --study=har --data_dir=DIR
python -m experiments.search --config=configs/har_search.py:quick   # smoke test
"""

import ml_collections

from mlp.configs import base, fer2013_search


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = fer2013_search.get_config(arg)
  c.name = "har_search_quick" if arg == "quick" else "har_search"

  c.data = base.get_config().data
  c.data.name = "har"
  c.data.val_subjects = 3  # validation = this many training subjects (subject-disjoint)
  c.data.subject_norm = "standardize"  # as configs/har.py: per-subject feature standardisation

  c.report.title = "UCI HAR hyperparameter search"
  c.report.test_split = "test"
  if arg != "quick":
    c.search.budget = 500
  return c
