"""A trained run, restored from its workdir to encode new images.

`load_trained(workdir)` reads WORKDIR/config.json (written by launch.py),
rebuilds the encoders with the engine's own functions (`train.create_models`
on the input shapes and band statistics of the training data), and restores
the best checkpoint's state (else the latest) into them. The restored step
directory is fingerprinted by SHA-256 over its files, so codes from two
encoders can be told apart: `model_pair` = "<workdir name>:<checksum>" is the
same for the S1 and S2 encoders of one run and differs between runs.
"""
import dataclasses
import hashlib
import itertools
import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from rs_jax import checkpoints
from rs_jax import evaluate
from rs_jax import input_pipeline
from rs_jax import optimizers
from rs_jax import paths
from rs_jax import sharding
from rs_jax import train
from rs_jax.models import encoder as encoder_lib

# config.task of a training run ("train": workdirs written before the task
# runner moved out of train.py).
TRAIN_TASKS = ("train_task", "train")


def checkpoint_checksum(directory) -> str:
  """SHA-256 (hex) over the relative paths and bytes of every file under
  `directory`, in sorted order."""
  digest = hashlib.sha256()
  directory = paths.resolve(directory)
  files = sorted((root / name).relative_to(directory).as_posix()
                 for root, _, names in directory.walk() for name in names)
  if not files:
    raise FileNotFoundError(f"{directory}: empty checkpoint directory")
  for rel in files:
    digest.update(rel.encode("utf-8") + b"\0")
    with (directory / rel).open("rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()


def _abstract_state(config, models, input_shapes, sharding):
  """Shapes/dtypes of `train.create_train_state`, placed with `sharding`:
  the restore target (`jax.eval_shape` only traces)."""
  tx, _ = optimizers.create_optimizer(config.optim, config.train.steps)
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      jax.eval_shape(lambda: train.create_train_state(
          config, models, input_shapes, tx, pretrained=False)))


@dataclasses.dataclass(frozen=True)
class Trained:
  """The encoders of a training run with their restored state.

  config: the run's ConfigDict; models {modality: HashEncoder}; state the
  train state (params / batch_stats per modality) replicated over all
  devices; stats {modality: {"mean", "std"}} of the training data;
  input_shapes {modality: (H, W, C)}; checkpoint: the restored step
  directory, step its step, checksum its SHA-256.
  """
  workdir: str
  config: ml_collections.ConfigDict
  models: dict[str, Any]
  state: dict[str, Any]
  stats: dict[str, Any]
  input_shapes: dict[str, tuple[int, ...]]
  checkpoint: str
  step: int
  checksum: str
  _encoders: dict = dataclasses.field(default_factory=dict, init=False,
                                      repr=False, compare=False)

  @property
  def bits(self) -> int:
    return int(self.config.model.bits)

  @property
  def model_pair(self) -> str:
    return f"{paths.resolve(self.workdir).name}:{self.checksum}"

  def check_modality(self, modality: str) -> None:
    if modality not in self.models:
      raise ValueError(f"modality {modality!r}: the run {self.workdir} has "
                       f"encoders for {sorted(self.models)}")

  def encode(self, modality: str, images) -> np.ndarray:
    """[B, H, W, C] images (raw, as stored in the dataset) -> uint32[B, W]
    packed codes of the modality's encoder (MiLaN eq. 5)."""
    self.check_modality(modality)
    images = np.asarray(images)
    shape = self.input_shapes[modality]
    if images.ndim != len(shape) + 1 or images.shape[1:] != shape:
      raise ValueError(f"{modality} images: the encoder expects [B, "
                       f"{', '.join(map(str, shape))}], got {images.shape}")
    fn = self._encoders.get(modality)
    if fn is None:
      models = {modality: self.models[modality]}
      fn = self._encoders[modality] = jax.jit(
          lambda params, batch_stats, x: evaluate.packed_codes(
              encoder_lib.encode(models, params, batch_stats, {modality: x},
                                 self.stats, train=False)[0][modality]))
    return np.asarray(fn(self.state["params"], self.state["batch_stats"],
                         images))


def load_config(workdir) -> ml_collections.ConfigDict:
  """WORKDIR/config.json as a ConfigDict (lists where the run had tuples)."""
  path = paths.resolve(workdir) / "config.json"
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except FileNotFoundError:
    raise FileNotFoundError(
        f"{path}: missing; a training workdir written by launch.py has it"
    ) from None


def load_trained(workdir, *, devices=None) -> Trained:
  """Rebuilds and restores the run in `workdir` (best state, else latest).

  The training data (config.data, relative paths inside the workdir) must be
  prepared: its shapes and band statistics define the encoders' inputs.
  """
  workdir = str(paths.resolve(workdir))
  config = load_config(workdir)
  if config.get("task") not in TRAIN_TASKS:
    raise ValueError(f"{workdir}: a {config.get('task')!r} workdir, not a "
                     "training run (task 'train_task'); give the workdir of the "
                     "run that trained the encoders")
  data = input_pipeline.load(config, workdir)
  shapes = data.input_shapes
  models = train.create_models(config, shapes)
  mesh = sharding.create_mesh(devices)
  target = _abstract_state(config, models, shapes,
                           sharding.replicated(mesh))
  for attempt in itertools.count(1):
    step, directory, state = None, None, None
    try:
      step, directory, state = _restore(workdir, config, target)
      checksum = checkpoint_checksum(directory)
      break
    except Exception:  # pylint: disable=broad-except
      # A running trainer may have replaced the step while it was read;
      # a damaged checkpoint fails every time.
      if attempt == _ATTEMPTS or step is None:
        raise
      logging.info("%s: reading step %s failed (replaced by the trainer?); "
                   "again", workdir, step, exc_info=True)
      time.sleep(0.5 * attempt)
  return Trained(workdir=workdir, config=config, models=models, state=state,
                 stats=data.stats, input_shapes=shapes,
                 checkpoint=str(directory), step=int(step), checksum=checksum)


_ATTEMPTS = 5


def _newest(workdir, config):
  """(step, directory) of the checkpoint a reader takes: the best state,
  else the latest; (None, None) without one."""
  ckpt = checkpoints.Checkpoints(workdir, best_metric=config.eval.select,
                                 read_only=True)
  try:
    for manager, step in ((ckpt.best, ckpt.best.best_step()),
                          (ckpt.latest, ckpt.latest.latest_step())):
      if step is not None:
        return step, paths.resolve(manager.directory) / str(step)
    return None, None
  finally:
    ckpt.close()


def _restore(workdir, config, target):
  """(step, directory, state) of the checkpoint `_newest` names."""
  step, directory = _newest(workdir, config)
  if step is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint under "
                            f"{paths.resolve(workdir) / 'checkpoints'}")
  ckpt = checkpoints.Checkpoints(workdir, best_metric=config.eval.select,
                                 read_only=True)
  try:
    if directory.parent.name == "best":
      return step, directory, ckpt.restore_best(target, step=step)
    return step, directory, ckpt.restore_latest(target, step=step)[0]
  finally:
    ckpt.close()
