"""Unsupervised contrastive hashing (configs/contrastive_ucm.py): the train
step on two cached views of generated features against a NumPy NT-Xent."""
import inspect
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report
from configs import contrastive_ucm
from rs_jax import losses
from rs_jax import optimizers
from rs_jax import train
from rs_jax.data import pipeline
from rs_jax.models import encoder as encoder_lib


def _np_ntxent(z1, z2, tau):
  """SimCLR eq. 1 averaged over the 2B anchors, by loops."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n, out = len(z), []
  for i in range(n):
    sims = [math.exp(z[i] @ z[k] / tau) for k in range(n) if k != i]
    out.append(-math.log(math.exp(z[i] @ z[(i + n // 2) % n] / tau)
                         / sum(sims)))
  return float(np.mean(out))


def _tiny_setup(views=4, images=24, dim=12):
  """Config, models, state, a jitted train step and the views batches of
  generated features: `images` images x `views` noisy views, view-major
  like features.cached_sources."""
  config = contrastive_ucm.get_config()
  config.model.bits, config.model.head_hidden = 8, (16,)
  config.train.batch_size = 16
  config.optim.lr = 1e-3
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(images, dim))
  source = pipeline.ArraySource({
      "image": np.concatenate([centres + 0.1 * rng.normal(size=centres.shape)
                               for _ in range(views)]).astype(np.float32),
      "label": np.tile(np.arange(images) % 3, views),
      "index": np.tile(np.arange(images), views)})
  models = {"image": encoder_lib.create_encoder(config.model, frozen=True)}
  tx, schedule = optimizers.create_optimizer(config.optim, 100)
  state = train.create_train_state(config, models, {"image": (dim,)}, tx)
  loss_fn = losses.combine(config.loss.weights.to_dict(),
                           config.loss.options.to_dict())
  step = jax.jit(train.make_train_step(models, tx, schedule, loss_fn, {},
                                       label_key="label", sampler="views"))
  batches = pipeline.train_batches(
      source, batch_size=config.train.batch_size, seed=0, sampler="views",
      keys=["image", "label"], **config.train.sampler_options)
  return config, models, state, step, batches


def test_config_is_unsupervised():
  c = contrastive_ucm.get_config()
  assert c.train.sampler == "views" and c.model.feature_views == 8
  assert not c.eval.val_query_split  # no model selection on labels
  for name in c.loss.weights:  # no loss term can take the labels
    assert "labels" not in inspect.signature(losses.LOSSES[name]).parameters
  inputs = train.loss_inputs({"image": jnp.zeros((6, 4))},
                             {"label": jnp.arange(6)}, label_key="label",
                             sampler="views")
  assert "labels" not in inputs
  assert inputs["embeddings1"].shape == inputs["embeddings2"].shape == (3, 4)


def test_train_step_ntxent_matches_numpy_and_loss_goes_down():
  config, models, state, step, batches = _tiny_setup()
  batch = next(batches)
  outputs, _ = encoder_lib.encode(models, state["params"],
                                  state["batch_stats"], batch, {}, train=True)
  v1, v2 = np.split(np.asarray(outputs["image"], np.float64), 2)
  tau = config.loss.options.ntxent.temperature
  want = _np_ntxent(v1 - 0.5, v2 - 0.5, tau)
  balance = np.mean((np.concatenate([v1, v2]).mean(0) - 0.5) ** 2)
  quant = np.mean(np.sum((np.concatenate([v1, v2])
                          - (np.concatenate([v1, v2]) >= 0.5)) ** 2, 1))
  state, scalars = step(state, batch)
  np.testing.assert_allclose(scalars["loss/ntxent"], want, rtol=1e-5)
  np.testing.assert_allclose(scalars["loss/bit_balance"], balance, rtol=1e-4)
  np.testing.assert_allclose(scalars["loss"], want + balance + 0.1 * quant,
                             rtol=1e-5)
  history = [float(scalars["loss/ntxent"])]
  for batch in itertools.islice(batches, 119):
    state, scalars = step(state, batch)
    history.append(float(scalars["loss/ntxent"]))
  # ~1.40 -> ~1.26 on these data.
  assert np.mean(history[-20:]) < np.mean(history[:20]) - 0.08, history


def test_unsupervised_table_from_json(tmp_path):
  from benchmarks import unsupervised_ucm  # pylint: disable=g-import-not-at-top
  records = [dict(method="nn_float", bits=0, seed=0, map=0.81, map_r=0.56)]
  records += [dict(method="itq", bits=32, seed=s, map=0.7 + 0.1 * s,
                   map_r=0.5) for s in (0, 1)]
  records += [dict(method="contrastive", bits=32, seed=0, map=0.8, map_r=0.6,
                   steps_per_sec=9.0)]
  record = dict(command="python -m benchmarks.unsupervised_ucm --bits 32",
                environment={}, total_s=60.0, prepare_s=5.0, bits=[32],
                seeds=[0, 1], contrastive_seeds=[0], records=records,
                config=contrastive_ucm.get_config().to_dict())
  path = tmp_path / "unsupervised_ucm_cpu.json"
  path.write_text(json.dumps(record))
  path.with_suffix(".md").write_text(f"old\n{report.NOTES}\n\nmy note\n")
  report.rerender(path, unsupervised_ucm.render, "benchmarks.unsupervised_ucm")
  md = path.with_suffix(".md").read_text()
  assert "| ITQ | 0.750 ± 0.071 |" in md
  assert "| Contrastive hashing (NT-Xent, two D4 views) | 0.800 |" in md
  assert "0.810 (any K)" in md and "9 steps/s" in md
  assert md.rstrip().endswith("my note") and "old" not in md
