"""Reference outputs of torchvision ResNet-18/50 and Inception-v3 (and timm's).

Runs ONLY in a separate torch venv (torch is never a dependency of rs_jax):

  python3.11 -m venv /work/venv-torch
  /work/venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 \
      timm==1.0.31 absl-py
  /work/venv-torch/bin/python tools/make_torchvision_reference.py \
      --fixture tests/fixtures/torchvision_reference.npz

Weights are not stored: every tensor of a model's state dict is drawn by
`reference_tensor` from a NumPy generator seeded by its name, so
tests/test_torch_checkpoints.py regenerates the same state dict from the
stored names and shapes without torch. The models are computed in float64,
on `reference_input` (a seeded [2, H, W, 3] normal batch), in eval mode
(running statistics) and in train mode (batch statistics; dropout 0).
Per architecture the fixture holds:

  {arch}/state      JSON [[name, shape], ...] of the torchvision state dict
  {arch}/timm       the same for timm's model of that name (its state-dict
                    names are torchvision's; AuxLogits absent)
  {arch}/{eval,train}_features  float32[2, D], the input of `fc`
  {arch}/{eval,train}_logits    float32[2, 10]
  {arch}/timm_eval_features     timm's features, same weights and input
  {arch}/stem_mean, stem_var    the stem BN's running statistics after the
                    train-mode call (torch momentum 0.1, unbiased variance)

and inception_v3/preprocess_sha256: SHA-256 of torchvision's
`Resize((299, 299), BILINEAR)` + `ToTensor` + `Normalize(ImageNet)` of
`reference_image()` (float32 HWC), the input of MiLaN's features.

Inception-v3 is built as torchvision builds its pretrained model:
`transform_input=True`, with the auxiliary classifier in its state dict
(dropped by the converter; not run: it needs 299x299 inputs); timm's model
gets torchvision's transformed input.
"""
import hashlib
import json
import zlib

import numpy as np
from absl import app
from absl import flags

def define_flags() -> None:
  """Defines the command-line flags (called only when run as a program)."""
  flags.DEFINE_string(
      "fixture", "tests/fixtures/torchvision_reference.npz", "Output .npz.")


FLAGS = flags.FLAGS

NUM_CLASSES = 10
# torchvision / timm builder name -> (input side, stem BN module)
ARCHS = {"resnet18": (61, "bn1"), "resnet50": (61, "bn1"),
         "inception_v3": (139, "Conv2d_1a_3x3.bn")}


def reference_tensor(name: str, shape, seed: int = 0) -> np.ndarray:
  """The value of state-dict entry `name`, from a generator seeded by it.

  conv / Linear weights: He normal (fan-in); BatchNorm weight U(0.5, 1.5),
  bias and running_mean 1 + 0.1 N(0, 1), running_var U(1, 3),
  num_batches_tracked 0 (int64); Linear bias 0.1 N(0, 1). Chosen so that
  float32 rounding stays small in both modes (torch's own float32 vs
  float64 features: <= 2.5e-5 here). Running statistics do not normalise a
  random net (with mean 0, var U(0.5, 1.5) eval-mode ResNet-50 features
  reach 1e4); in train mode a net of mostly dead ReLUs amplifies rounding
  (with BN bias 0.1 N(0, 1) torch's float32 ResNet-50 is off by 5e-4).
  """
  shape = tuple(int(s) for s in shape)
  module, _, leaf = name.rpartition(".")
  if leaf == "num_batches_tracked":
    return np.zeros(shape, np.int64)
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  if len(shape) >= 2:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(
        np.float32)
  if leaf == "running_var":
    return rng.uniform(1.0, 3.0, shape).astype(np.float32)
  if leaf == "weight":
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  offset = 0.0 if module.endswith("fc") else 1.0
  return (offset + 0.1 * rng.standard_normal(shape)).astype(np.float32)


def reference_state_dict(state_json: str, seed: int = 0) -> dict:
  """{name: array} for the stored JSON [[name, shape], ...]."""
  return {name: reference_tensor(name, shape, seed)
          for name, shape in json.loads(state_json)}


def reference_input(arch: str, seed: int = 0) -> np.ndarray:
  """float32[2, H, W, 3] standard normal NHWC batch for `arch`."""
  size = ARCHS[arch][0]
  rng = np.random.default_rng([seed, zlib.crc32(arch.encode())])
  return rng.standard_normal((2, size, size, 3)).astype(np.float32)


def reference_image() -> np.ndarray:
  """uint8[256, 256, 3] seeded noise (a UC Merced-sized RGB image)."""
  rng = np.random.default_rng(zlib.crc32(b"image"))
  return rng.integers(0, 256, (256, 256, 3), np.uint8)


def _preprocess_sha256(torchvision) -> str:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  t = torchvision.transforms
  pipeline = t.Compose([
      t.Resize((299, 299), interpolation=t.InterpolationMode.BILINEAR),
      t.ToTensor(),
      t.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
  x = pipeline(Image.fromarray(reference_image())).numpy()
  return hashlib.sha256(np.ascontiguousarray(
      x.transpose(1, 2, 0)).tobytes()).hexdigest()


def _state_json(model) -> str:
  return json.dumps([[k, list(v.shape)] for k, v in
                     model.state_dict().items()])


def _load(model, torch):
  state = reference_state_dict(_state_json(model))
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
  return model.double()


def _run(model, x, torch):
  """-> (features, logits) float32, features = the input of `fc`."""
  seen = []
  hook = model.fc.register_forward_hook(lambda m, i, o: seen.append(i[0]))
  with torch.no_grad():
    out = model(x)
  hook.remove()
  logits = out[0] if isinstance(out, tuple) else out  # InceptionOutputs
  return (seen[0].numpy().astype(np.float32),
          logits.numpy().astype(np.float32))


def main(argv):
  del argv
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  torch.use_deterministic_algorithms(True)
  out = {"versions": np.str_(
      f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, float64 on CPU")}
  for arch, (_, stem) in ARCHS.items():
    kw = (dict(transform_input=True, aux_logits=True, init_weights=False,
               dropout=0.0) if arch == "inception_v3" else {})
    model = _load(getattr(torchvision.models, arch)(
        weights=None, num_classes=NUM_CLASSES, **kw), torch)
    x = torch.from_numpy(reference_input(arch).transpose(0, 3, 1, 2)).double()
    out[f"{arch}/state"] = np.str_(_state_json(model))
    if arch == "inception_v3":
      model.AuxLogits = None  # needs 299x299 inputs; not converted anyway
    model.eval()
    out[f"{arch}/eval_features"], out[f"{arch}/eval_logits"] = _run(
        model, x, torch)
    model.train()
    out[f"{arch}/train_features"], out[f"{arch}/train_logits"] = _run(
        model, x, torch)
    bn = model.get_submodule(stem)
    out[f"{arch}/stem_mean"] = bn.running_mean.numpy().astype(np.float32)
    out[f"{arch}/stem_var"] = bn.running_var.numpy().astype(np.float32)

    timm_model = _load(timm.create_model(arch, pretrained=False,
                                         num_classes=NUM_CLASSES), torch)
    out[f"{arch}/timm"] = np.str_(_state_json(timm_model))
    timm_model.eval()
    timm_x = x
    if arch == "inception_v3":
      timm_x = model._transform_input(x)  # pylint: disable=protected-access
    out[f"{arch}/timm_eval_features"] = _run(timm_model, timm_x, torch)[0]
    diff = np.abs(out[f"{arch}/timm_eval_features"] -
                  out[f"{arch}/eval_features"]).max()
    print(f"{arch}: {len(model.state_dict())} tensors; eval features "
          f"|max| {np.abs(out[f'{arch}/eval_features']).max():.3g}, train "
          f"{np.abs(out[f'{arch}/train_features']).max():.3g}; timm vs "
          f"torchvision max |diff| {diff:.2g}")
  out["inception_v3/preprocess_sha256"] = np.str_(
      _preprocess_sha256(torchvision))
  with open(FLAGS.fixture, "wb") as f:
    np.savez_compressed(f, **out)
  print(f"wrote {FLAGS.fixture}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
