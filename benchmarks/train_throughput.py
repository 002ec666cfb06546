"""Training throughput of the engine's train step (examples/s).

The S2 setting of the multi-modal thesis / BigEarthNet: 120x120x12 patches,
ResNet-50 (and ResNet-18; standard stem, as BigEarthNet models use at 120
px) -> hash head (K = 64) with triplet (batch-all) + push + bit-balance
losses and Adam: the train state of `train.create_train_state` and the exact
`train.make_train_step` the trainer jits, batch sharded over all local
devices. Data are random arrays already on device, so this measures the
step, not the input pipeline (see benchmarks/data_throughput.py for that).

  python -m benchmarks.train_throughput [--backbones resnet50,resnet18] \
      [--batch_size 32] [--steps 5] [--out benchmarks/results/NAME]
  python -m benchmarks.train_throughput \
      --from_json benchmarks/results/train_throughput_cpu.json

Prints a markdown table and writes NAME.md / NAME.json; library INFO goes to
TMPDIR/train_throughput.log.
"""
import os
import platform
import tempfile
import time

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags

from benchmarks import report
from rs_jax import console
from rs_jax import losses
from rs_jax import optimizers
from rs_jax import sharding
from rs_jax import train

FLAGS = flags.FLAGS
LOSS_WEIGHTS = {"triplet_mined": 1.0, "push": 0.001, "bit_balance": 1.0}


def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_list("backbones", ["resnet50", "resnet18"], "Backbones.")
  flags.DEFINE_integer("batch_size", 32, "Global batch size.")
  flags.DEFINE_integer("steps", 5, "Timed steps (after the first).")
  flags.DEFINE_string("out", os.fspath(
      report.RESULTS / f"train_throughput_{jax.default_backend()}"),
                      "Results path without suffix.")
  flags.DEFINE_string("from_json", None, "Render the .md beside this results "
                      ".json again (no measurement).")


def experiment_config(backbone, bits):
  """Returns the config of one measured setting (model, seed, optimiser)."""
  return ml_collections.ConfigDict(dict(
      seed=0,
      model=dict(backbone=backbone, bits=bits, width=64, small_inputs=False,
                 head_hidden=(1024, 512), frozen=False, weights=""),
      optim=dict(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=1e-4)))


def random_batch(mesh, batch_size, shape):
  """Returns a random S2 batch and multi-hot labels, batch-sharded."""
  rng = np.random.default_rng(0)
  return jax.device_put({
      "s2": rng.normal(size=(batch_size, *shape)).astype(np.float32),
      "labels": (rng.random((batch_size, 19)) < 0.15).astype(np.uint8)},
                        sharding.batch_sharded(mesh))


def measure(backbone, *, batch_size, steps, bits=64, size=120, bands=12):
  """Returns the row of one backbone: s/step, examples/s, first step s."""
  config = experiment_config(backbone, bits)
  shapes = {"s2": (size, size, bands)}
  models = train.create_models(config, shapes)
  tx, schedule = optimizers.create_optimizer(config.optim, 1000)
  mesh = sharding.create_mesh()
  replicated = sharding.replicated(mesh)
  sharded = sharding.batch_sharded(mesh)
  state = jax.device_put(train.create_train_state(
      config, models, shapes, tx, pretrained=False), replicated)
  step = jax.jit(train.make_train_step(models, tx, schedule,
                                       losses.combine(LOSS_WEIGHTS), {},
                                       label_key="labels", sampler="random"),
                 in_shardings=(replicated, sharded),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  batch = random_batch(mesh, batch_size, shapes["s2"])
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  t0 = time.perf_counter()
  state, out = step(state, batch)
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, out = step(state, batch)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - t0) / steps
  return dict(backbone=backbone, batch_size=batch_size, steps=steps,
              seconds_per_step=seconds, examples_per_s=batch_size / seconds,
              first_step_s=compile_s, params=params)


def environment() -> dict:
  """Returns the devices, processor, CPUs and JAX version of this run."""
  device = jax.devices()[0]
  return dict(device=str(device), device_kind=device.device_kind,
              num_devices=jax.device_count(),
              processor=platform.processor() or platform.machine(),
              cpus=os.cpu_count(), jax=jax.__version__)


def render(record, *, rendered_by=None) -> str:
  """Returns the markdown of a results record (the .json's content)."""
  header = (f"Train step, S2 120x120x12 -> hash head K=64, triplet + push + "
            f"balance, Adam; {record['num_devices']} x "
            f"{record['device_kind']} ({record['processor']}, "
            f"{record['cpus']} CPUs), jax {record['jax']}")
  rows = [[r["backbone"], f"{r['params'] / 1e6:.1f}M", r["batch_size"],
           f"{r['seconds_per_step']:.3f}", f"{r['examples_per_s']:.1f}",
           f"{r['first_step_s']:.1f}"] for r in record["rows"]]
  md = [header, "", report.markdown_table(
      ["backbone", "params", "batch", "s/step", "examples/s",
       "first step (compile) s"], rows), "",
        f"Command: `{record['command']}`"]
  if record.get("command_as_run"):
    md += ["", f"Recorded as run: `{record['command_as_run']}`"]
  if rendered_by:
    md += ["", f"This file was rendered from the JSON by `{rendered_by}`."]
  return "\n".join(md)


def main(argv):
  """Measures every backbone and writes the table, or renders a JSON."""
  if report.rendered_from_json(argv, render, __spec__.name):
    return
  report.start_console(os.path.join(tempfile.gettempdir(),
                                    "train_throughput.log"))
  rows = []
  for backbone in FLAGS.backbones:
    rows.append(measure(backbone, batch_size=FLAGS.batch_size,
                        steps=FLAGS.steps))
    console.show(f"{backbone}: {rows[-1]['examples_per_s']:.1f} examples/s")
  record = dict(command=report.command(__spec__.name), **environment(),
                rows=rows)
  report.write_results(FLAGS.out, record, render, keep_notes=False)


if __name__ == "__main__":
  define_flags()
  app.run(main)
