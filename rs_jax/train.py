"""train_and_evaluate(config, workdir): hash encoders trained data-parallel.

One encoder per input modality (`config.data.inputs`, e.g. ("s2",) or
("s1", "s2")), each backbone -> MiLaN hash head. The batch is sharded over a
1-D device mesh (axis "data"), the parameters replicated; `train_step` is
jitted with those shardings and donates the state. BatchNorm statistics are
computed over the global batch (XLA inserts the cross-device reductions), so
the same global batch gives the same loss on 1 or 8 devices.

Every `eval.every` steps the validation split is encoded and ranked
(`evaluate.py`) and the best state by `config.eval.select` is checkpointed;
the final test uses the best state. Resuming: rerun the same command.
Metrics go to the log and to TensorBoard event files in the workdir
(`event_writer`, through the path layer like every other file).
"""
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions

from rs_jax import checkpoints
from rs_jax import console
from rs_jax import evaluate
from rs_jax import event_writer
from rs_jax import features
from rs_jax import input_pipeline
from rs_jax import losses
from rs_jax import optimizers
from rs_jax import paths
from rs_jax import sharding
from rs_jax import workdir as workdir_lib
from rs_jax.models import encoder as encoder_lib


def create_models(config, input_shapes):
  """{modality: HashEncoder}; input_shapes: {modality: per-example shape}."""
  frozen = config.model.frozen
  return {m: encoder_lib.create_encoder(config.model, frozen=frozen)
          for m in input_shapes}


def init_variables(models, input_shapes, seed: int):
  """{modality: {'params': ..., 'batch_stats': ...}} from the seed."""
  keys = jax.random.split(jax.random.key(seed), len(models))
  out = {}
  for key, (m, model) in zip(keys, sorted(models.items())):
    x = jnp.zeros((2, *input_shapes[m]), jnp.float32)
    variables = jax.jit(lambda k, x, model=model: model.init(k, x))(key, x)
    out[m] = {"params": variables["params"],
              "batch_stats": variables.get("batch_stats", {})}
  return out


def load_pretrained_backbones(model_config, variables, input_shapes):
  """Fine-tuning: backbone variables from `model.weights` ('imagenet' for
  EfficientNet-Lite0, or an .npz file) replace the random ones."""
  for m, v in variables.items():
    pretrained = features.backbone_variables(model_config, input_shapes[m])
    v["params"]["backbone"] = pretrained["params"]
    if "batch_stats" in pretrained:
      v["batch_stats"]["backbone"] = pretrained["batch_stats"]
  return variables


def loss_inputs(outputs, batch, *, label_key: str, sampler: str,
                logits=None):
  """Keyword inputs of `losses.combine` from the encoded batch.

  One modality: embeddings, labels. Several: each modality's codes by name
  (s1=, s2=), embeddings = their concatenation along the batch. The triplet
  sampler's batch is [anchors; positives; negatives] -> anchor/positive/
  negative; the pair sampler's [firsts; seconds] -> embeddings1/2, similar;
  the views sampler's [first views; second views] -> embeddings1/2 and no
  labels (unsupervised: a loss that needs labels fails).
  logits ({modality: [B, C]} of the class head, one modality): logits, for
  `cross_entropy` (class ids) or `sigmoid_bce` (multi-hot), every row.
  """
  inputs = dict(outputs)
  inputs["embeddings"] = jnp.concatenate(list(outputs.values()), axis=0)
  if sampler != "views":
    inputs["labels"] = batch[label_key]
  if logits:
    inputs["logits"] = jnp.concatenate(list(logits.values()), axis=0)
  if sampler == "triplet":
    inputs["anchor"], inputs["positive"], inputs["negative"] = jnp.split(
        inputs["embeddings"], 3)
  elif sampler in ("pairs", "views"):
    inputs["embeddings1"], inputs["embeddings2"] = jnp.split(
        inputs["embeddings"], 2)
    if sampler == "pairs":
      inputs["similar"] = batch["pair_label"]
  return inputs


def make_train_step(models, tx, schedule, loss_fn, stats, *, label_key,
                    sampler, with_logits=False):
  """(state, batch) -> (state, scalars), state a dict (step, params, ...).

  with_logits: the encoders have class heads; their logits reach the loss.
  """

  def train_step(state, batch):
    def objective(params):
      encoded = encoder_lib.encode(
          models, params, state["batch_stats"], batch, stats, train=True,
          with_logits=with_logits)
      outputs, logits, new_stats = (encoded if with_logits
                                    else (encoded[0], None, encoded[1]))
      total, terms = loss_fn(**loss_inputs(outputs, batch,
                                           label_key=label_key,
                                           sampler=sampler, logits=logits))
      return total, (terms, new_stats)

    (total, (terms, new_stats)), grads = jax.value_and_grad(
        objective, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_state = {"step": state["step"] + 1,
                 "params": optax.apply_updates(state["params"], updates),
                 "batch_stats": new_stats, "opt_state": opt_state}
    scalars = {"loss": total, "learning_rate": schedule(state["step"]),
               **{f"loss/{k}": v for k, v in terms.items()}}
    return new_state, scalars

  return train_step


def _float_twin(name: str) -> str:
  """'s1->s2/map@20' -> 's1->s2/float/map@20': the same metric on the
  float outputs."""
  head, _, metric = name.rpartition("/")
  return f"{head}/float/{metric}" if head else f"float/{metric}"


def check_config(config, num_devices: int) -> None:
  """Raises ValueError naming the field for settings a run would otherwise
  meet only after loading and compiling, or after training."""
  positive = ("model.bits", "train.batch_size", "train.steps",
              "eval.batch_size", "train.log_every", "eval.every",
              "train.checkpoint_every")
  value = {f: config[f.split(".")[0]][f.split(".")[1]] for f in positive}
  for field in positive:
    if not isinstance(value[field], int) or value[field] < 1:
      raise ValueError(f"{field} = {value[field]!r}: must be a positive "
                       "integer")
  for field in ("train.batch_size", "eval.batch_size"):
    if value[field] % num_devices:
      raise ValueError(
          f"{field} = {value[field]} is not a multiple of the {num_devices} "
          f"devices the batch is split over")
  names = evaluate.metric_names(config.data.inputs, config.eval.ks)
  if config.eval.select not in names:
    raise ValueError(f"eval.select = {config.eval.select!r} is not a metric "
                     f"of this run; e.g. {sorted(names)[:4]} ...")
  if (len(config.data.inputs) > 1
      and config.loss.weights.get("triplet_mined", 0)):
    raise ValueError(
        "triplet_mined ranks `embeddings`, which with several modalities is "
        "their concatenation; use cross_modal_triplet / mse_cosine_label")
  num_classes = encoder_lib.num_classes_of(config.model)
  if not isinstance(num_classes, int) or num_classes < 0:
    raise ValueError(f"model.num_classes = {num_classes!r}: must be an "
                     "integer >= 0 (0: no class head)")
  for name in CLASS_LOSSES:
    if config.loss.weights.get(name, 0) and not num_classes:
      raise ValueError(f"loss.weights.{name} needs the class head's logits: "
                       "set model.num_classes")
  if num_classes and len(config.data.inputs) > 1:
    raise ValueError(f"model.num_classes = {num_classes}: a class head "
                     "needs one modality in data.inputs, got "
                     f"{tuple(config.data.inputs)}")


CLASS_LOSSES = {"cross_entropy": "class ids", "sigmoid_bce": "multi-hot"}


def check_labels(config, labels) -> None:
  """Raises ValueError naming the field when the training labels (int[N]
  class ids or multi-hot [N, C]) do not fit the class head or its loss."""
  num_classes = encoder_lib.num_classes_of(config.model)
  if not num_classes:
    return
  labels = np.asarray(labels)
  kind = "multi-hot" if labels.ndim == 2 else "class ids"
  key = config.data.label_key
  for name, wanted in CLASS_LOSSES.items():
    if config.loss.weights.get(name, 0) and kind != wanted:
      other = next(n for n, w in CLASS_LOSSES.items() if w == kind)
      raise ValueError(f"loss.weights.{name} takes {wanted} labels; "
                       f"data.label_key = {key!r} holds {kind}: use {other}")
  if kind == "multi-hot" and labels.shape[1] != num_classes:
    raise ValueError(f"model.num_classes = {num_classes}: data.label_key = "
                     f"{key!r} has {labels.shape[1]} labels")
  if kind == "class ids" and len(labels) and (
      labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"model.num_classes = {num_classes}: data.label_key = "
                     f"{key!r} has class ids {labels.min()}..{labels.max()}")


def create_train_state(config, models, input_shapes, tx, *,
                       pretrained: bool = True) -> dict:
  """Returns the train state {step, params, batch_stats, opt_state}.

  params / batch_stats: {modality: ...} initialised from config.seed; with
  `pretrained` and model.weights (not frozen) the backbones are replaced by
  the pretrained ones. `jax.eval_shape` of it is the restore target.
  """
  variables = init_variables(models, input_shapes, config.seed)
  if pretrained and config.model.weights and not config.model.frozen:
    variables = load_pretrained_backbones(config.model, variables,
                                          input_shapes)
  params = {m: v["params"] for m, v in variables.items()}
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "batch_stats": {m: v["batch_stats"] for m, v in variables.items()},
          "opt_state": tx.init(params)}


def _steps_not_below_checkpoint(config):
  def check(workdir):
    step = checkpoints.latest_step(workdir)
    if step is not None and step > config.train.steps:
      raise workdir_lib.WorkdirError(
          f"train.steps={config.train.steps}: {workdir} holds a checkpoint "
          f"of step {step}; resume with train.steps >= {step}")
  return check


def train_and_evaluate(config, workdir: str, *, devices=None) -> dict:
  """Trains, validates, checkpoints, tests; returns and writes metrics.

  devices: the mesh's devices (default all). Returns {"test/...": final
  metrics of the best validation state, "train/loss": mean loss of the last
  logging window, ...}, also written to WORKDIR/metrics.json. The workdir is
  claimed first (`workdir.claim`: lock, config check on resume).
  """
  check_config(config, len(devices) if devices else jax.device_count())
  with workdir_lib.claim(config, workdir,
                         checks=[_steps_not_below_checkpoint(config)]) as wd:
    return _train_and_evaluate(config, wd, devices)


def _train_and_evaluate(config, workdir, devices) -> dict:
  mesh = sharding.create_mesh(devices)
  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  data = input_pipeline.load(config, workdir)
  check_labels(config, data.labels(config.data.train_split))
  models = create_models(config, data.input_shapes)
  total_steps = config.train.steps
  tx, schedule = optimizers.create_optimizer(config.optim, total_steps)
  loss_fn = losses.combine(config.loss.weights.to_dict(),
                           config.loss.get("options", {}).to_dict()
                           if "options" in config.loss else None)

  state = jax.device_put(
      create_train_state(config, models, data.input_shapes, tx), replicated)
  is_main = jax.process_index() == 0
  writer = metric_writers.MultiWriter(
      [metric_writers.LoggingWriter()]
      + ([event_writer.EventWriter(workdir)] if is_main else []))
  if is_main:
    parameter_overview.log_parameter_overview(state["params"])
  ckpt = checkpoints.Checkpoints(workdir, best_metric=config.eval.select)
  batches = data.train_batches(seed=config.seed)
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, data_state = restored
    data.restore_iterator(batches, data_state, int(state["step"]))
    console.show(f"resumed from step {int(state['step'])}")
  start = int(state["step"])
  progress = console.Progress(total_steps, start)
  headline = [config.eval.select, _float_twin(config.eval.select)]

  with_logits = bool(encoder_lib.num_classes_of(config.model))
  train_step = jax.jit(
      make_train_step(models, tx, schedule, loss_fn, data.stats,
                      label_key=config.data.label_key,
                      sampler=config.train.sampler, with_logits=with_logits),
      in_shardings=(replicated, batch_sharding),
      out_shardings=(replicated, replicated), donate_argnums=0)
  evaluator = evaluate.Evaluator(models, data, mesh, ks=tuple(config.eval.ks))
  report = periodic_actions.ReportProgress(num_train_steps=total_steps,
                                           writer=writer)
  scalars, last_log, other_time = [], {}, 0.0
  loop_start = time.perf_counter()
  try:
    for step in range(start + 1, total_steps + 1):
      batch = data.to_global(next(batches), batch_sharding)
      with report.timed("train_step", wait_jax_async_dispatch=False):
        state, out = train_step(state, batch)
      scalars.append(out)
      report(step)
      if step % config.train.log_every == 0 or step == total_steps:
        scalars = jax.device_get(scalars)
        last_log = {k: float(np.mean([s[k] for s in scalars]))
                    for k in scalars[0]}
        writer.write_scalars(step, last_log)
        if is_main:
          progress(step, last_log)
        scalars = []
      t0, last = time.perf_counter(), step == total_steps
      if config.eval.val_query_split and (step % config.eval.every == 0 or last):
        with report.timed("eval"):
          val = evaluator.evaluate(state, config.eval.val_query_split,
                                   config.eval.val_database_split)
        writer.write_scalars(step, {f"val/{k}": v for k, v in val.items()})
        ckpt.save_best(step, state, val)
        if is_main:
          console.show(console.metrics_line(f"validation at step {step}:",
                                            val, headline))
      if step % config.train.checkpoint_every == 0 or last:
        ckpt.save_latest(step, state, data.iterator_state(batches))
      other_time += time.perf_counter() - t0
  except BaseException:
    ckpt.close()  # lets in-flight saves finish; a hard kill is safe too
    writer.flush()
    raise
  jax.block_until_ready(state)
  train_time = time.perf_counter() - loop_start - other_time

  best = ckpt.restore_best(state)
  final_state = best if best is not None else state
  results = {f"test/{k}": v for k, v in evaluator.evaluate(
      final_state, config.eval.query_split, config.eval.database_split).items()}
  if total_steps > start:  # input pipeline included, eval and saves not
    results["train/steps_per_sec"] = (total_steps - start) / train_time
  results["train/final_step"] = total_steps
  if "loss" in last_log:
    results["train/loss"] = last_log["loss"]
  elif (workdir / "metrics.json").exists():  # a finished run, tested again
    earlier = json.loads((workdir / "metrics.json").read_text())
    results.update({k: v for k, v in earlier.items()
                    if k.startswith("train/") and k not in results})
  writer.write_scalars(total_steps, results)
  writer.flush()
  ckpt.close()
  if is_main:
    tested = ("best validation state" if best is not None
              else f"state at step {total_steps}")
    console.show(console.metrics_line(
        f"test ({tested}):", results,
        [f"test/{k}" for k in headline], strip="test/"))
    paths.write_text(workdir / "metrics.json",
                     json.dumps(results, indent=2, sort_keys=True))
    evaluator.save_sheet(workdir / "retrieval.png")
    console.show(f"wrote {workdir / 'metrics.json'} and retrieval.png")
  return results
