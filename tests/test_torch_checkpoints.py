"""Converted torchvision / timm state dicts give torchvision's outputs.

Choice: a committed fixture, not torch as a test dependency. torch +
torchvision is a 5.5 GB CUDA build here (the CPU build of torch has no
matching torchvision on PyPI), minutes of install for every CI run on a
clean clone, for three forward passes. The fixture
(tests/fixtures/torchvision_reference.npz, ~110 KB, written by
tools/make_torchvision_reference.py with torch 2.14.1, torchvision 0.29.1,
timm 1.0.31) holds each model's state-dict names and shapes and its float64
outputs; the weights themselves are regenerated here from a NumPy generator
seeded by each name (`reference_state_dict`), converted with
`torch_checkpoints.convert`, and run by our Flax modules in float32.

Measured max |Flax - torchvision| over features and logits: eval
ResNet-18 7.6e-6, ResNet-50 1.7e-5, Inception-v3 6e-7; train (batch
statistics) 7.2e-6, 2.3e-5, 2.6e-5; tolerance 1e-4 (torch's own float32
differs from its float64 by up to 2.5e-5 here). One compile per
architecture covers both modes.
"""
import json
import re
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from rs_jax.models import encoder
from rs_jax.models import torch_checkpoints
from rs_jax.models import weights
from tools import make_torchvision_reference as ref

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
ATOL = 1e-4
FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "inception_v3": 2048}
# Elements per channel of the stem BN in train mode: batch 2 x the stem's
# output (ResNet 61 -> 7x7/2 pad 3 -> 31; Inception 139 -> 3x3/2 -> 69).
STEM = {"resnet18": (("bn_init",), 2 * 31 * 31),
        "resnet50": (("bn_init",), 2 * 31 * 31),
        "inception_v3": (("Conv2d_1a_3x3", "bn"), 2 * 69 * 69)}


def run_convert(*argv):
  """Runs `python -m rs_jax.models.convert ARGV` -> the finished process."""
  return subprocess.run(
      [sys.executable, "-m", "rs_jax.models.convert", *argv],
      cwd=FIXTURES.parent.parent, capture_output=True, text=True,
      timeout=300, check=False)


@pytest.fixture(scope="module")
def reference():
  with np.load(FIXTURES / "torchvision_reference.npz") as f:
    return {k: f[k] for k in f.files}


def _state(reference, arch):
  return ref.reference_state_dict(str(reference[f"{arch}/state"]))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "inception_v3"])
def test_matches_torchvision_in_eval_and_train_mode(reference, arch):
  full = torch_checkpoints.convert(_state(reference, arch), arch,
                                   classifier=True)
  if arch == "inception_v3":
    keys = set(traverse_util.flatten_dict(full, sep="/"))
    assert "params/Mixed_7c/branch3x3dbl_3b/conv/kernel" in keys
    assert not any("AuxLogits" in k for k in keys)
  fc = full["params"].pop("fc")
  assert fc["kernel"].shape == (FEATURE_DIMS[arch], ref.NUM_CLASSES)
  backbone = encoder.create_backbone(ml_collections.ConfigDict(
      {"backbone": arch}))

  @jax.jit
  def run(variables, x):
    eval_out = backbone.apply(variables, x, train=False)
    train_out, updates = backbone.apply(variables, x, train=True,
                                        mutable=["batch_stats"])
    return eval_out, train_out, updates["batch_stats"]

  eval_f, train_f, stats = jax.tree.map(
      np.asarray, run(full, ref.reference_input(arch)))
  for mode, feats in (("eval", eval_f), ("train", train_f)):
    logits = feats.astype(np.float64) @ fc["kernel"] + fc["bias"]
    np.testing.assert_allclose(feats, reference[f"{arch}/{mode}_features"],
                               rtol=0, atol=ATOL, err_msg=mode)
    np.testing.assert_allclose(logits, reference[f"{arch}/{mode}_logits"],
                               rtol=0, atol=ATOL, err_msg=mode)
  np.testing.assert_allclose(eval_f, reference[f"{arch}/timm_eval_features"],
                             rtol=0, atol=ATOL)
  # Running statistics after the train step: torch's momentum 0.1 is Flax's
  # 0.9; torch updates the variance with the unbiased batch variance, Flax
  # with the biased one (a factor (n - 1) / n on the batch term).
  path, n = STEM[arch]
  old, new = full["batch_stats"], stats
  for name in path:
    old, new = old[name], new[name]
  np.testing.assert_allclose(new["mean"], reference[f"{arch}/stem_mean"],
                             rtol=0, atol=1e-5)
  torch_batch_term = reference[f"{arch}/stem_var"] - 0.9 * old["var"]
  np.testing.assert_allclose(new["var"],
                             0.9 * old["var"] + torch_batch_term * (n - 1) / n,
                             rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "inception_v3"])
def test_timm_has_torchvisions_state_dict(reference, arch):
  """timm's models of the same names have torchvision's state-dict names and
  shapes (Inception-v3 without AuxLogits, which the converter drops), so
  they convert as above; their outputs are checked in the test above."""
  tv = json.loads(str(reference[f"{arch}/state"]))
  timm = json.loads(str(reference[f"{arch}/timm"]))
  assert timm == [e for e in tv if not e[0].startswith("AuxLogits.")]
  assert len(timm) < len(tv) if arch == "inception_v3" else timm == tv


def test_names_follow_the_documented_map(reference):
  state = _state(reference, "resnet50")
  variables, names = weights.from_state_dict(
      state, module_path=torch_checkpoints.resnet_module_path)
  assert names["params/conv_init/kernel"] == "conv1.weight"
  assert names["batch_stats/bn_init/var"] == "bn1.running_var"
  assert (names["params/layer2_0/downsample_conv/kernel"] ==
          "layer2.0.downsample.0.weight")
  assert (names["batch_stats/layer4_2/bn3/mean"] ==
          "layer4.2.bn3.running_mean")
  np.testing.assert_array_equal(variables["params"]["conv_init"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"],
                                state["fc.weight"].T)
  assert not any("num_batches_tracked" in n for n in names.values())


@pytest.fixture(scope="module")
def resnet18_state(reference):
  return _state(reference, "resnet18")


def _error(state, arch="resnet18", **kw):
  with pytest.raises(ValueError) as e:
    torch_checkpoints.convert(state, arch, source="ckpt.pth", **kw)
  return str(e.value)


def test_mismatches_name_the_parameter(resnet18_state):
  state = dict(resnet18_state)
  state["layer1.0.conv1.weight"] = np.zeros((64, 64, 5, 5), np.float32)
  assert _error(state) == (
      "ckpt.pth as resnet18: parameter 'layer1.0.conv1.weight' "
      "(params/layer1_0/conv1/kernel) has shape (5, 5, 64, 64), the model "
      "expects (3, 3, 64, 64)")
  state = dict(resnet18_state)
  del state["layer4.1.bn2.running_var"]
  assert _error(state) == ("ckpt.pth as resnet18: the model's "
                           "batch_stats/layer4_1/bn2/var has no parameter in "
                           "the file")
  state = dict(resnet18_state, **{"head.weight": np.zeros((3, 4))})
  assert _error(state).endswith(
      "parameter 'head.weight' (params/head/kernel) is not in the model")
  msg = _error(resnet18_state, "resnet50")
  assert msg.startswith("ckpt.pth as resnet50: ") and "more)" in msg
  assert "classifier=True but there is no 'fc.weight'" in _error(
      {k: v for k, v in resnet18_state.items() if not k.startswith("fc.")},
      classifier=True)
  with pytest.raises(ValueError, match="unknown architecture 'vgg16'"):
    torch_checkpoints.convert(resnet18_state, "vgg16")


def test_cli_converts_safetensors_for_sentinel2_bands(resnet18_state,
                                                      tmp_path):
  """DDP "module." prefixes stripped; 12 bands: stem adapted, fc dropped;
  the .npz loads as `model.backbone=resnet18` weights."""
  src = tmp_path / "r18.safetensors"
  safetensors.numpy.save_file(
      {f"module.{k}": v for k, v in resnet18_state.items()}, str(src))
  out = tmp_path / "r18.npz"
  proc = run_convert("--arch=resnet18", f"--torch_file={src}",
                     f"--out={out}", "--in_channels=12")
  assert proc.returncode == 0, proc.stderr
  template = torch_checkpoints.variables_template("resnet18", in_channels=12)
  loaded = weights.load_npz(out, template)
  want = torch_checkpoints.convert(resnet18_state, "resnet18",
                                   in_channels=12)
  jax.tree.map(np.testing.assert_array_equal, loaded, want)
  np.testing.assert_array_equal(
      loaded["params"]["conv_init"]["kernel"],
      weights.adapt_first_conv(
          resnet18_state["conv1.weight"].transpose(2, 3, 1, 0), 12))
  proc = run_convert("--arch=resnet50", f"--torch_file={src}", f"--out={out}")
  assert proc.returncode == 1 and proc.stdout == "", proc
  assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
  assert re.search(r"as resnet50: .*more\)", proc.stderr), proc.stderr


def test_read_state_dict_unwraps_training_checkpoints():
  state = torch_checkpoints.read_state_dict(FIXTURES / "torch_small.pt")
  assert "epoch" not in state and state["net.0.weight"].shape == (3, 2, 3, 3)
  with pytest.raises(ValueError, match="without exactly one data.pkl"):
    torch_checkpoints.read_state_dict(FIXTURES / "torchvision_reference.npz")
