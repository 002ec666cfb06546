"""The ANNEAL round loop against a small model interface (Fig. 2).

Round 0 trains on the initial set; each of the next `rounds` rounds selects
h pairs (CAL: the images that h bits buy), asks the oracle, adds the
answers (and their transitive pairs) to T, trains and evaluates. The state
is saved after every step, so a crash or a pending human oracle loses
nothing: rerunning continues at the saved phase, and answered queries are
never asked again.

Model interface (all host-side callables):
  train_fn(items, labels, params) -> params. Pair strategies: items = T's
    pairs int64[M, 2] (annotated + free), labels = bool[M] similar. CAL:
    items = image indices int64[K], labels = class ids int64[K]. params is
    the previous round's params, or None (first call, or after a restart).
  embed_fn(params, indices int[N]) -> mapping with "embeddings" float[N, D]
    (the metric space of MGUE and the k-means features) and, for CAL,
    "class_probs" float[N, C].
  pair_prob_fn(params, embedded, pairs int[P, 2]) -> float[P] P(similar) of
    the pair classifier (BCGUE only); `embedded` = embed_fn's mapping.
  evaluate_fn(params) -> mapping with "map@5" (recorded in the curve, with
    any "<kind>_map@5" of other retrieval features, `trainer.retrieval_metrics`).
"""
import math
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from rs_jax.active_learning import acquisition
from rs_jax.active_learning import oracle as oracle_lib
from rs_jax.active_learning import state as state_lib


class ALResult(NamedTuple):
  state: state_lib.ALState
  params: Any
  waiting_for: Optional[str]  # query CSV to fill in, None when finished


def _train(st, strategy, train_fn, params):
  if strategy == "cal":
    return train_fn(st.images, st.image_labels, params)
  return train_fn(st.pairs, st.similar, params)


def _curve_entry(st, metrics):
  value = float(metrics["map@5"])
  if not math.isfinite(value):
    raise ValueError(f"evaluate_fn returned map@5 = {value} in round "
                     f"{st.round}")
  return {"round": st.round, "bits": st.bits,
          "labeled_pairs": st.labeled_pairs, "free_pairs": st.free_pairs,
          "labeled_images": len(st.images), "map@5": value,
          **{k: float(v) for k, v in metrics.items()
             if k.endswith("_map@5")}}


def _select(st, *, strategy, h, params, embed_fn, pair_prob_fn, lam,
            p_factor, kmeans_iters):
  """Fills st.pending (pairs) or st.pending_images (CAL) for round + 1."""
  nxt = st.round + 1
  if strategy == "random":
    embedded = {}
  else:
    embedded = embed_fn(params, np.arange(st.num_images))
  if strategy == "cal":
    unlabeled = np.setdiff1d(np.arange(st.num_images), st.images)
    n = acquisition.images_for_bits(h, st.num_classes)
    st.pending_images = acquisition.select_images(
        class_probs=embedded["class_probs"], embeddings=embedded["embeddings"],
        unlabeled=unlabeled, n=min(n, len(unlabeled)), seed=st.seed,
        round=nxt, p_factor=p_factor, kmeans_iters=kmeans_iters)
    return
  probs = None
  if strategy.startswith("bcgue"):
    if pair_prob_fn is None:
      raise ValueError(f"strategy {strategy!r} needs pair_prob_fn")
    probs = np.asarray(pair_prob_fn(params, embedded, st.pool))
  idx = acquisition.select_pairs(
      strategy=strategy, pool=st.pool, h=min(h, len(st.pool)), seed=st.seed,
      round=nxt, embeddings=embedded.get("embeddings"),
      labeled_pairs=st.pairs, labeled_similar=st.similar, pair_probs=probs,
      lam=lam, p_factor=p_factor, kmeans_iters=kmeans_iters)
  st.pending = st.pool[idx]


def run_active_learning(*, state_path: str, curve_path: str, strategy: str,
                        rounds: int, h: int, oracle, train_fn: Callable,
                        embed_fn: Callable, evaluate_fn: Callable,
                        initial_state: Optional[state_lib.ALState] = None,
                        pair_prob_fn: Optional[Callable] = None, params=None,
                        lam: float = 3.0, p_factor: int = 4,
                        kmeans_iters: int = 50,
                        log: Callable = print) -> ALResult:
  """Runs (or resumes) active learning up to round `rounds`.

  Args:
    state_path: the AL state (npz); resumed from when it exists, else
      `initial_state` (`state.new_pair_state` / `new_image_state`) is used.
    curve_path: al_curve.json, one entry per round: round, bits,
      labeled_pairs, free_pairs, labeled_images, map@5.
    strategy: one of acquisition.STRATEGIES. rounds: AL rounds after the
      initial set. h: pairs (bits) per round (336 UC Merced, 392 AID).
    oracle: `oracle.SimulatedOracle` or `oracle.FileOracle`.
    train_fn, embed_fn, evaluate_fn, pair_prob_fn: see the module doc.
    params: trained params to start from (e.g. restored from a checkpoint).
    lam, p_factor, kmeans_iters: MGUE lambda, p = p_factor * h, k-means steps.
  Returns:
    ALResult; waiting_for names the CSV when a FileOracle waits for answers.
  """
  if strategy not in acquisition.STRATEGIES:
    raise ValueError(f"strategy must be one of {acquisition.STRATEGIES}, got "
                     f"{strategy!r}")
  if h < 1 or rounds < 0:
    raise ValueError(f"need h >= 1 and rounds >= 0, got h={h}, "
                     f"rounds={rounds}")
  try:
    st = state_lib.load(state_path)
    log(f"AL: resumed {state_path} at round {st.round}, phase {st.phase}")
  except FileNotFoundError:
    if initial_state is None:
      raise ValueError(f"no AL state at {state_path} and no initial_state")
    st = initial_state
    state_lib.save(state_path, st)
  if (strategy == "cal") != (len(st.pairs) == 0):
    raise ValueError(f"strategy {strategy!r} does not match the state in "
                     f"{state_path} ({len(st.pairs)} labeled pairs, "
                     f"{len(st.images)} class-labeled images)")

  while True:
    if st.phase == "train":
      params = _train(st, strategy, train_fn, params)
      entry = _curve_entry(st, evaluate_fn(params))
      state_lib.append_curve(curve_path, entry)
      log(f"AL: {entry}" + (f"; {st.conflicts} contradictory transitive "
                            "pairs dropped" if st.conflicts else ""))
      st.phase = "select"
      state_lib.save(state_path, st)
    elif st.round >= rounds:
      return ALResult(st, params, None)
    elif st.phase == "select":
      if params is None:  # restarted after training: retrain on the same T
        params = _train(st, strategy, train_fn, params)
      _select(st, strategy=strategy, h=h, params=params, embed_fn=embed_fn,
              pair_prob_fn=pair_prob_fn, lam=lam, p_factor=p_factor,
              kmeans_iters=kmeans_iters)
      st.phase = "query"
      state_lib.save(state_path, st)
    else:  # query
      nxt = st.round + 1
      try:
        if strategy == "cal":
          answers = oracle.classify(st.pending_images, round=nxt)
          st = state_lib.add_class_labels(st, st.pending_images, answers)
        else:
          answers = oracle.answer(st.pending, round=nxt)
          st = state_lib.add_pair_labels(st, st.pending, answers)
      except oracle_lib.AnswersPending as e:
        log(f"AL: waiting for answers: {e}")
        return ALResult(st, params, e.path)
      st.round, st.phase = nxt, "train"
      state_lib.save(state_path, st)
