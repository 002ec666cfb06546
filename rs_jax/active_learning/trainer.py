"""ANNEAL models trained on frozen backbone features (the CPU mode).

The Siamese encoder's shared backbone is frozen, so an image is its cached
feature vector x float[D]; the trainable parts are the heads (ANNEAL Sec.
IV-B): the trainable top t of the backbone (Dense + ReLU layers, `top`;
none when the backbone itself is fine-tuned, `finetune.py`), whose output
f = t(x) is the backbone feature, the projection head g (512 -> 256, ReLU)
on f for the cosine contrastive loss (eq. 1), for BCGUE the pair classifier
phi on concat(f1, f2) (eq. 9) with (1 - gamma) L_CL + gamma L_BCE (eq. 11),
for CAL a softmax class head on g with cross-entropy. Adam, batches of
pairs (or images) from the labeled set with the minority label oversampled
every epoch.

Retrieval (`retrieval_metrics`, both modes): cosine similarity of the
backbone features f (Sec. IV-B: "the projection head is discarded and the
feature representations obtained from the backbone ... are used to perform
CBIR"), or of the projections g(f) (`features="projection"`).

Every call of `fit` starts from the same initialisation (the seed), so the
model of a round depends only on the labeled set: a resumed run equals an
uninterrupted one.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rs_jax import losses
from rs_jax import metrics
from rs_jax.active_learning import pairs as pairs_lib
from rs_jax.models import heads

MODES = ("pairs", "pairs_bce", "classes")
RETRIEVAL_FEATURES = ("backbone", "projection")


def mode_of(strategy: str) -> str:
  """Training mode of an AL strategy: CAL trains on class labels, BCGUE
  adds the pair classifier, the others train on pairs only."""
  if strategy == "cal":
    return "classes"
  return "pairs_bce" if strategy.startswith("bcgue") else "pairs"


class AnnealHeads(nn.Module):
  """The trainable layers on (frozen or fine-tuned) backbone outputs x
  float[B, D].

  features(x) -> f = t(x) float32[B, top[-1]] (the backbone feature: x
  through the Dense + ReLU layers `top`; x itself when top is empty);
  embed(x) -> g(f) float32[B, 256]; pair_logits(x1, x2) -> phi(f1, f2)
  float32[B]; class_logits(x) -> float32[B, C] on g(f).
  __call__(x) -> {"embeddings", plus "pair_logits" phi(f, f) with a pair
  classifier, "class_logits" with num_classes > 0} (all heads, for init).
  """
  pair_classifier: bool = False
  num_classes: int = 0
  projection_hidden: int = 512
  projection_features: int = 256
  pair_hidden: Sequence[int] = (512, 256)
  top: Sequence[int] = ()

  def setup(self):
    self.top_layers = [nn.Dense(h, name=f"top{i}")
                       for i, h in enumerate(self.top)]
    self.projection = heads.ProjectionHead(self.projection_hidden,
                                           self.projection_features)
    if self.pair_classifier:
      self.pair = heads.PairClassifier(tuple(self.pair_hidden))
    if self.num_classes:
      self.classes = heads.ClassHead(self.num_classes)

  def features(self, x):
    x = jnp.asarray(x, jnp.float32)
    for layer in self.top_layers:
      x = nn.relu(layer(x))
    return x

  def embed(self, x):
    return self.projection(self.features(x))

  def pair_logits(self, x1, x2):
    return self.pair(self.features(x1), self.features(x2))

  def class_logits(self, x):
    return self.classes(self.embed(x))

  def __call__(self, x):
    out = {"embeddings": self.embed(x)}
    if self.pair_classifier:
      out["pair_logits"] = self.pair_logits(x, x)
    if self.num_classes:
      out["class_logits"] = self.class_logits(x)
    return out


def create_model(model_config, *, mode: str, num_classes: int = 0,
                 top=()):
  """Returns the `AnnealHeads` of a training mode (MODES); top: the Dense
  widths of the trainable backbone top (config.model.frozen_top in the CPU
  mode, () with the backbone fine-tuned)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  return AnnealHeads(
      pair_classifier=mode == "pairs_bce",
      num_classes=num_classes if mode == "classes" else 0,
      projection_hidden=model_config.get("projection_hidden", 512),
      projection_features=model_config.get("projection_features", 256),
      pair_hidden=tuple(model_config.get("pair_hidden", (512, 256))),
      top=tuple(int(h) for h in top))


def loss_fn(params, features, items, labels, *, model, mode, margin,
            gamma):
  """Loss of one batch. items int[B, 2] pairs (labels = similar) or int[B]
  images (labels = class ids, mode "classes")."""
  if mode == "classes":
    logits = model.apply(params, features[items], method="class_logits")
    return losses.cross_entropy(logits=logits, labels=labels)
  x1, x2 = features[items[:, 0]], features[items[:, 1]]
  z = model.apply(params, jnp.concatenate([x1, x2]), method="embed")
  z1, z2 = jnp.split(z, 2)
  loss = losses.contrastive_cosine(embeddings1=z1, embeddings2=z2,
                                   similar=labels, margin=margin)
  if mode == "pairs_bce":
    bce = losses.pair_bce(
        pair_logits=model.apply(params, x1, x2, method="pair_logits"),
        similar=labels)
    loss = (1.0 - gamma) * loss + gamma * bce
  return loss


@functools.partial(jax.jit, static_argnames=("model", "mode", "lr", "margin",
                                             "gamma"))
def _train_steps(params, features, items, labels, num_steps, *, model, mode,
                 lr, margin, gamma):
  """num_steps (traced) Adam steps over items [S, B, ...] / labels [S, B];
  S is a padded bucket, rows >= num_steps are never read."""
  tx = optax.adam(lr)
  grad_fn = jax.value_and_grad(functools.partial(
      loss_fn, model=model, mode=mode, margin=margin, gamma=gamma))

  def body(step, carry):
    params, opt_state, _ = carry
    loss, grads = grad_fn(params, features, items[step], labels[step])
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, _, loss = jax.lax.fori_loop(
      0, num_steps, body, (params, tx.init(params), jnp.float32(0.0)))
  return params, loss


def schedule(labels, *, mode: str, epochs: int, batch_size: int, seed: int,
             steps=None, min_batches: int = 0) -> np.ndarray:
  """Row indices int64[S, batch_size] of the training batches.

  Pair modes: every epoch is the labeled pairs with the minority label
  oversampled (`pairs.oversample_minority`), shuffled; classes: a shuffled
  pass over the images. An epoch shorter than `min_batches` batches is
  extended by further shuffled passes (a fresh head on frozen features needs
  more than the one batch per epoch of CAL's 84 first images). An epoch's
  last batch is filled up with random rows of the same epoch. With `steps`,
  `steps` batches drawn uniformly from one oversampled set instead of epochs
  (the upper bound on all pairs, whose epochs are too long for a CPU).
  """
  labels = np.asarray(labels)
  n = len(labels)
  if n == 0:
    raise ValueError("no labeled items to train on")

  def one_pass(e, r):
    if mode == "classes":
      return np.random.default_rng([seed, e, r]).permutation(n)
    return pairs_lib.oversample_minority(labels, seed=[seed, e, r])

  rng = np.random.default_rng([seed, epochs, 1])
  if steps is not None:
    return rng.choice(one_pass(0, 0), (steps, batch_size))
  rows = []
  for e in range(epochs):
    passes = [one_pass(e, 0)]
    while sum(map(len, passes)) < min_batches * batch_size:
      passes.append(one_pass(e, len(passes)))
    order = np.concatenate(passes)
    fill = -len(order) % batch_size
    rows.append(np.concatenate([order, rng.choice(order, fill)]))
  return np.concatenate(rows).reshape(-1, batch_size)


def _bucket(s: int) -> int:
  return 1 << max(s - 1, 0).bit_length()


def init_params(model, feature_dim: int, *, seed: int):
  return jax.jit(model.init)(jax.random.key(seed),
                             jnp.zeros((1, feature_dim), jnp.float32))


def fit(model, features, items, labels, *, mode: str, seed: int,
        epochs: int = 15, batch_size: int = 128, lr: float = 1e-4,
        margin: float = 0.5, gamma: float = 0.5, steps=None,
        min_batches: int = 0):
  """Trains the heads from their seeded initialisation.

  Args:
    model: `create_model(...)`. features: float[N, D] backbone features.
    items: pairs int[M, 2] with labels bool[M] similar (pair modes) or
      images int[M] with labels int[M] class ids (mode "classes").
    epochs, batch_size, lr: 15, 128, 1e-4 (Sec. IV-B). margin: m of eq. 1.
    gamma: eq. 11 (pairs_bce). steps, min_batches: see `schedule`.
  Returns:
    (params, last batch loss float).
  """
  features = jnp.asarray(features, jnp.float32)
  items, labels = np.asarray(items), np.asarray(labels)
  rows = schedule(labels, mode=mode, epochs=epochs, batch_size=batch_size,
                  seed=seed, steps=steps, min_batches=min_batches)
  padded = np.zeros((_bucket(len(rows)), batch_size), np.int64)
  padded[:len(rows)] = rows
  batches = items.astype(np.int32)[padded]
  targets = (labels.astype(np.int32) if mode == "classes"
             else labels.astype(np.float32))[padded]
  params = init_params(model, features.shape[1], seed=seed)
  params, loss = _train_steps(params, features, batches, targets,
                              jnp.int32(len(rows)), model=model, mode=mode,
                              lr=lr, margin=margin, gamma=gamma)
  return params, float(loss)


@functools.partial(jax.jit, static_argnames=("model", "with_classes"))
def embed(params, features, *, model, with_classes=False):
  """Frozen backbone outputs x float[N, D] -> {"features": backbone
  features f = t(x) float32[N, D'], "embeddings": g(f) float32[N, 256]}
  (+ "class_probs" float32[N, C]), the keys of `finetune.embed`."""
  f = model.apply(params, features, method="features")
  z = model.apply(params, features, method="embed")
  out = {"features": f, "embeddings": z}
  if with_classes:
    logits = model.apply(params, features, method="class_logits")
    out["class_probs"] = jax.nn.softmax(logits, -1)
  return out


@functools.partial(jax.jit, static_argnames=("chunk",))
def pair_probs(params, features, pairs, *, chunk: int = 32768):
  """P(similar) = sigmoid(phi(f_i, f_j)) (eq. 9) of pairs int[P, 2] ->
  float32[P], for the whole pool; features: the backbone features f
  float[N, D] (`embed(...)["features"]`, after the top).

  The first Dense layer of phi is split over the concatenation,
  W [x_i; x_j] = W_a x_i + W_b x_j, so it runs once per image instead of
  once per pair; the rest in chunks of `chunk` pairs.
  """
  p = params["params"]["pair"]
  d = features.shape[1]
  x = jnp.asarray(features, jnp.float32)
  first = p["dense0"]
  a = x @ first["kernel"][:d] + first["bias"]
  b = x @ first["kernel"][d:]
  layers = [f"dense{i}" for i in range(1, len(p) - 1)]  # dense0 .. out

  def logits(c):
    h = jax.nn.relu(a[c[:, 0]] + b[c[:, 1]])
    for name in layers:
      h = jax.nn.relu(h @ p[name]["kernel"] + p[name]["bias"])
    return (h @ p["out"]["kernel"] + p["out"]["bias"])[:, 0]

  n = pairs.shape[0]
  size = min(chunk, n)
  steps = -(-n // size)
  padded = jnp.pad(jnp.asarray(pairs, jnp.int32), ((0, steps * size - n),
                                                   (0, 0)))
  out = jax.lax.map(logits, padded.reshape(steps, size, 2))
  return jax.nn.sigmoid(out.reshape(-1)[:n])


@functools.partial(jax.jit, static_argnames=("ks",))
def _cosine_retrieval(q, q_labels, db, db_labels, *, ks):
  return metrics.retrieval_metrics(q, q_labels, db, db_labels, ks=ks,
                                   metric="cosine")


def retrieval_metrics(query, query_labels, database, database_labels, *,
                      features: str, ks=(5,)) -> dict[str, float]:
  """Retrieval by cosine similarity: mAP@k etc. of
  `metrics.retrieval_metrics` (mAP normalised by the relevant items
  retrieved, ANNEAL eq. 12), queries against the database.

  query, database: {"features": backbone features f float[N, D],
  "embeddings": projections g(f) float[N, 256]} (`embed`). features:
  RETRIEVAL_FEATURES, the kind ranked for the plain keys ("map@5", ...);
  the other kind's metrics are returned too, under "<kind>_<key>"
  ("projection_map@5"), so one run records both.
  """
  if features not in RETRIEVAL_FEATURES:
    raise ValueError(f"eval.retrieval_features must be one of "
                     f"{RETRIEVAL_FEATURES}, got {features!r}")
  key = {"backbone": "features", "projection": "embeddings"}
  out = {}
  for kind in RETRIEVAL_FEATURES:
    got = _cosine_retrieval(query[key[kind]], query_labels,
                            database[key[kind]], database_labels,
                            ks=tuple(ks))
    prefix = "" if kind == features else f"{kind}_"
    out.update({prefix + k: float(v) for k, v in got.items()})
  return out


def evaluate(params, query_features, query_labels, db_features, db_labels, *,
             model, features: str, ks=(5,)) -> dict[str, float]:
  """`retrieval_metrics` of frozen backbone outputs float[N, D] of the
  queries and the database through the trained layers (`embed`)."""
  q = embed(params, query_features, model=model)
  db = embed(params, db_features, model=model)
  return retrieval_metrics(q, query_labels, db, db_labels, features=features,
                           ks=ks)
