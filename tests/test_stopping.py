"""Stopping rules (mlp.stopping): each rule on its own, then the chain's order."""

import math

import numpy as np
import pytest

from mlp import stopping


def m(train_loss, val_loss, val_acc=None, pruned=None):
  """An epoch's metrics for len(train_loss) members."""
  n = len(train_loss)
  return {
    "train_loss": np.asarray(train_loss, float),
    "val_loss": np.asarray(val_loss, float),
    "train_acc": np.zeros(n),
    "val_acc": np.asarray(val_acc if val_acc is not None else np.zeros(n), float),
    "pruned": np.asarray(pruned if pruned is not None else np.zeros(n, bool)),
  }


def run(rule, epochs_metrics):
  """The stop masks of ``rule`` over successive epochs (1-based), from its initial state."""
  state = rule.init(len(epochs_metrics[0]["val_loss"]))
  out = []
  for epoch, metrics in enumerate(epochs_metrics, 1):
    state, stop = rule.update(state, epoch, metrics)
    out.append(np.asarray(stop).tolist())
  return out


def test_diverged_stops_non_finite_or_runaway_losses_only():
  rule = stopping.Diverged(limit=10.0)
  stops = run(rule, [m([1.0, np.nan, 1.0, 11.0, 1.0], [1.0, 1.0, np.inf, 1.0, 10.0])])
  assert stops == [[False, True, True, True, False]]  # 10.0 is at the limit, not past it
  with pytest.raises(ValueError, match="train.diverge"):
    stopping.Diverged(0.0)


def test_gap_waits_for_its_min_epoch_then_stops_a_wide_gap_either_way():
  rule = stopping.Gap(gap=0.5, min_epoch=2)
  wide = m([0.1, 2.0, 1.0], [1.0, 0.1, 1.2])  # |gap|: 0.9, 1.9, 0.2
  assert run(rule, [wide, wide, wide]) == [
    [False, False, False],
    [False, False, False],
    [True, True, False],
  ]


def test_patience_counts_epochs_without_a_better_val_loss_and_says_which_epoch_was_best():
  rule = stopping.Patience(epochs=2, monitor="val_loss")
  state = rule.init(2)
  seen = []
  for epoch, losses in enumerate([[1.0, 1.0], [0.5, 1.0], [0.6, 1.0], [0.5, 0.9]], 1):
    state, stop = rule.update(state, epoch, m([0.0, 0.0], losses))
    seen.append((state.improved.tolist(), state.wait.tolist(), stop.tolist()))
  assert seen == [
    ([True, True], [0, 0], [False, False]),
    ([True, False], [0, 1], [False, False]),
    ([False, False], [1, 2], [False, True]),  # member 1: two epochs without beating 1.0
    ([False, True], [2, 0], [True, False]),  # a tie (0.5) is not an improvement
  ]


def test_patience_on_val_acc_wants_it_higher():
  rule = stopping.Patience(epochs=1, monitor="val_acc")
  stops = run(rule, [m([0.0], [0.0], [0.5]), m([0.0], [0.0], [0.7]), m([0.0], [0.0], [0.6])])
  assert stops == [[False], [False], [True]]
  with pytest.raises(ValueError, match="monitor"):
    stopping.Patience(2, "train_acc")
  with pytest.raises(ValueError, match="patience"):
    stopping.Patience(0, "val_loss")


def test_pruned_stops_the_members_the_pruner_named():
  assert run(stopping.Pruned(), [m([0, 0, 0], [0, 0, 0], pruned=[False, True, False])]) == [
    [False, True, False]
  ]


def test_max_epochs_stops_everyone_at_the_budget():
  rule = stopping.MaxEpochs(2)
  assert run(rule, [m([0, 0], [0, 0])] * 3) == [[False, False], [True, True], [True, True]]
  with pytest.raises(ValueError, match="max_epochs"):
    stopping.MaxEpochs(0)


def test_chain_names_the_first_rule_in_its_order_and_every_rule_keeps_its_state():
  chain = stopping.chain(
    stopping.Diverged(100.0),
    stopping.Patience(1, "val_loss"),
    stopping.Pruned(),
    stopping.MaxEpochs(2),
  )
  states = chain.init(4)
  # Epoch 1: member 0 diverges and is pruned (diverged first); member 1 is pruned only.
  states, reasons = chain.update(
    states, 1, m([np.nan, 1.0, 1.0, 1.0], [1.0] * 4, pruned=[True, True, False, False])
  )
  assert reasons == ["diverged", "pruned", "", ""]
  # Epoch 2: members 0-2 meet patience and the budget at once (patience first; the chain speaks
  # for every member, mlp.train.fit reads it for the active ones); member 3 has improved, so only
  # the budget stops it. The patience state moved on for every member.
  states, reasons = chain.update(states, 2, m([1.0] * 4, [1.0, 1.0, 1.0, 0.5]))
  assert reasons == ["patience", "patience", "patience", "max_epochs"]
  assert chain.state_of(states, stopping.Patience).improved.tolist() == [False] * 3 + [True]


def test_a_chain_must_end_and_says_what_it_holds():
  with pytest.raises(ValueError, match="MaxEpochs"):
    stopping.chain(stopping.Gap(0.1, 0))
  chain = stopping.chain(
    stopping.Diverged(6 * math.log(3)), stopping.Gap(0.1, 5), stopping.MaxEpochs(9)
  )
  assert chain.max_epochs == 9 and chain.find(stopping.Patience) is None
  assert [r["rule"] for r in chain.describe()] == ["diverged", "gap", "max_epochs"]
  assert chain.describe()[1] == {"rule": "gap", "gap": 0.1, "min_epoch": 5}
  # Equal rules are equal chains: runs that stop alike share a fit loop (mlp.plan.groups).
  again = stopping.chain(
    stopping.Diverged(6 * math.log(3)), stopping.Gap(0.1, 5), stopping.MaxEpochs(9)
  )
  assert chain == again and hash(chain) == hash(again)
