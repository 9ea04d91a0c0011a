"""Hyperparameter search on an Optuna study in shared storage; JAX populations do the training.

Any number of workers, on any machines, run :func:`run_worker` on the same study. Each worker
asks trials in batches, plans each (mlp.plan), groups them by static shape (``plan.groups``),
trains each group with ``trainer.train_group`` (one vmapped population on accelerators, member by
member on CPU),
saves every trial as a run (TensorBoard + HParams, metrics, model, evaluation reports) and tells
the study the best validation accuracy (maximised), with val loss, epochs and test accuracies as
user attributes.

Storage: a journal file in the workdir by default (no server; a shared file system also works),
or any SQLAlchemy URL (``postgresql://...``) for many machines.

Budget: ``search.budget`` trials per study (COMPLETE, plus FAIL with ``count_failed``), exactly,
however many workers race. Trials are ranked by number; a trial is kept only if fewer than
``budget`` lower-numbered trials are counted (COMPLETE, RUNNING, WAITING, [FAIL]) when its owner
checks right after asking. Lower numbers exist before a trial does, so every owner sees them; a
surplus trial is failed at once (``fail_reason=surplus``), never trained. Workers keep going until
the budget of finished trials is reached, so a trial lost to a dead worker is replaced.

Dead workers: every in-flight trial has a heartbeat (Optuna's native one on RDB storage, a
``heartbeat`` user attribute on the journal). A RUNNING trial whose heartbeat is older than
``grace_period``, or whose worker process on this host is gone, is marked FAIL by the next worker
that looks (at start and between batches): it is never counted as a result.

Shapes: depth, every width and the batch size are static (one compiled program each). With the
study's step-1 widths (100-500) and batch sizes (50-200), asked trials practically never share a
shape, so every trial compiles and trains alone. ``step`` quantises them (default: width step 50,
9 values; batch step 50, 4 values): trials of one ask batch then share shapes more often (one
vmapped population per shape on a GPU) and the compiled programs are reused by later batches of
the same worker (on CPU the gain is the compile time, a few seconds per trial). The price is a
coarser space; a finished coarse search can be refined by a second study with a narrower range.

Strategies: ``random`` (RandomSampler), ``tpe`` (TPESampler, constant liar for parallel workers)
and ``sequential`` (one hyperparameter at a time in ``search.order``, keeping the best value
before moving on): its trials are enqueued on the same study with ``stage``/``point`` attributes,
so the plan is derived from the stored trials alone and any worker can resume or join it.
"""

from mlp.search.leaderboard import leaderboard, trials_per_hour, write_outputs
from mlp.search.space import (
  SCALES,
  Param,
  SearchError,
  apply,
  base_params,
  grid,
  hparams,
  param_names,
  space_of,
  suggest,
)
from mlp.search.strategies import (
  PRUNERS,
  STRATEGIES,
  Stage,
  make_pruner,
  make_sampler,
  sequential_stage,
)
from mlp.search.worker import Options, Worker, open_storage, open_study, run_worker

__all__ = [
  "PRUNERS",
  "Options",
  "SCALES",
  "STRATEGIES",
  "Param",
  "SearchError",
  "Stage",
  "Worker",
  "apply",
  "base_params",
  "grid",
  "hparams",
  "leaderboard",
  "make_pruner",
  "make_sampler",
  "open_storage",
  "open_study",
  "param_names",
  "run_worker",
  "sequential_stage",
  "space_of",
  "suggest",
  "trials_per_hour",
  "write_outputs",
]
