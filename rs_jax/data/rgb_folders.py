"""Class-per-folder RGB archives: UC Merced (rs_ucmerced) and AID (rs_aid).

manual_dir holds one folder per class (or an `Images/` folder that does, as
UC Merced ships); every class of the archive must be there, with at least one
image. Images may be .tif/.tiff, .jpg/.jpeg, .png or .webp; grey, palette and
RGBA images are converted to RGB. Hidden files (".name") are ignored; any
other file is bad input, like an unreadable or truncated image, an unknown
or missing class folder, or an empty class folder.

Features: image uint8[H, W, 3] (stored as PNG, lossless), label int64 (index
in the alphabetical class order; names in the features), filename
"class/name.ext". Examples are stored in (class, filename) order.

Options: splits (None: all in "train"; a {split: ratio} dict; or a preset of
rs_jax.data.splits, e.g. "milan" or "anneal"), stratified per class and
seeded by `seed`. UC Merced also: multilabels (None, or the TSV of the
17-class multi-label annotation of Chaudhuri et al., IEEE TGRS 2018, e.g.
"multilabels.tsv"; a relative path is inside manual_dir): the examples then
also carry `labels` uint8[17], the multi-hot vector of the image's row
(`read_multilabels`; train on it with data.label_key = "labels"); every
image needs a row, and the split stays stratified by the 21 classes.
"""
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from rs_jax.data import base
from rs_jax.data import splits

EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".webp")

UCMERCED_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings",
    "chaparral", "denseresidential", "forest", "freeway", "golfcourse",
    "harbor", "intersection", "mediumresidential", "mobilehomepark",
    "overpass", "parkinglot", "river", "runway", "sparseresidential",
    "storagetanks", "tenniscourt")

# The header of the UC Merced multi-label TSV after its first column.
UCMERCED_MULTILABELS = (
    "airplane", "bare-soil", "buildings", "cars", "chaparral", "court",
    "dock", "field", "grass", "mobile-home", "pavement", "sand", "sea",
    "ship", "tanks", "trees", "water")
MULTILABEL_KEY = "IMAGE\\LABEL"

AID_CLASSES = (
    "Airport", "BareLand", "BaseballField", "Beach", "Bridge", "Center",
    "Church", "Commercial", "DenseResidential", "Desert", "Farmland",
    "Forest", "Industrial", "Meadow", "MediumResidential", "Mountain", "Park",
    "Parking", "Playground", "Pond", "Port", "RailwayStation", "Resort",
    "River", "School", "SparseResidential", "Square", "Stadium",
    "StorageTanks", "Viaduct")


def read_rgb(path) -> np.ndarray:
  """uint8[H, W, 3] pixels of an image file (PIL; raises on bad files)."""
  with Image.open(path) as img:
    img.load()  # decodes now: truncated files fail here
    if img.mode not in ("RGB", "RGBA", "L", "P"):
      raise ValueError(f"image mode {img.mode!r}, expected 8-bit RGB")
    return np.asarray(img.convert("RGB"), np.uint8)


def read_multilabels(path, names=UCMERCED_MULTILABELS) -> dict:
  """Returns {image name without extension: uint8[len(names)] multi-hot}.

  The file: tab-separated, a header row `IMAGE\\LABEL` + `names`, then one
  row per image: its name and one 0/1 column per label. Raises ValueError
  naming the file and row (1 = the header) on a wrong header, column count
  or value, or a repeated image.
  """
  path = epath.Path(path)
  lines = path.read_text().splitlines()
  header = lines[0].split("\t") if lines else []
  if header != [MULTILABEL_KEY, *names]:
    raise ValueError(f"{path}: row 1: header must be {MULTILABEL_KEY!r} + "
                     f"{list(names)}, got {header}")
  table = {}
  for row, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    cells = line.split("\t")
    if len(cells) != len(names) + 1:
      raise ValueError(f"{path}: row {row}: {len(cells)} columns, expected "
                       f"{len(names) + 1} (image name + {len(names)} labels)")
    image, values = cells[0], [c.strip() for c in cells[1:]]
    bad = [(n, v) for n, v in zip(names, values) if v not in ("0", "1")]
    if bad:
      raise ValueError(f"{path}: row {row} ({image}): label {bad[0][0]!r} is "
                       f"{bad[0][1]!r}, expected 0 or 1")
    if image in table:
      raise ValueError(f"{path}: row {row}: image {image!r} again")
    table[image] = np.array([v == "1" for v in values], np.uint8)
  return table


class _RgbFolders(base.RsBuilder, skip_registration=True):
  """Class-per-folder RGB archive (see the module docstring)."""

  CLASSES: tuple[str, ...] = ()
  MULTILABELS: tuple[str, ...] = ()  # with the option `multilabels`
  DEFAULT_OPTIONS = {"splits": None}

  def _features(self):
    features = {
        "image": tfds.features.Image(shape=(None, None, 3),
                                     encoding_format="png"),
        "label": tfds.features.ClassLabel(names=self.CLASSES),
        "filename": tfds.features.Text(),
    }
    if self.options.get("multilabels"):
      features["labels"] = tfds.features.Tensor(
          shape=(len(self.MULTILABELS),), dtype=np.uint8)
    return features

  @classmethod
  def normalize_options(cls, options):
    """Drops an unset `multilabels` (None or ""), so that preparations made
    before the option existed compare equal."""
    if "multilabels" in options and not options["multilabels"]:
      options = {k: v for k, v in options.items() if k != "multilabels"}
    return options

  def _multilabel_tsv(self, manual_dir):
    """Returns the path of the `multilabels` TSV, or None without it."""
    name = self.options.get("multilabels")
    if not name:
      return None
    path = epath.Path(name)
    if not path.is_absolute():
      path = manual_dir / path
    if not path.is_file():
      raise FileNotFoundError(f"{path}: the multilabels TSV (option "
                              "multilabels) is missing")
    return path

  def _splits(self, manual_dir):
    root = manual_dir / "Images" if (manual_dir / "Images").is_dir() else manual_dir
    folders = {p.name: p for p in root.iterdir()
               if p.is_dir() and not p.name.startswith(".")}
    for name in sorted(set(folders) - set(self.CLASSES)):
      self.invalid(folders[name], f"unknown class folder; classes are "
                   f"{list(self.CLASSES)}")
    tsv = self._multilabel_tsv(manual_dir)
    table = None if tsv is None else read_multilabels(tsv, self.MULTILABELS)
    items = []
    for label, name in enumerate(self.CLASSES):
      if name not in folders:
        self.invalid(root / name, "class folder missing")
        continue
      files = sorted(p for p in folders[name].iterdir()
                     if not p.name.startswith("."))
      images = []
      for p in files:
        if not (p.suffix.lower() in EXTENSIONS and p.is_file()):
          self.invalid(p, f"not an image file (accepted: {EXTENSIONS})")
        elif table is not None and p.stem not in table:
          self.invalid(p, f"no row {p.stem!r} in the multilabels TSV "
                       f"{tsv}")
        else:
          images.append(p)
      if not images:
        self.invalid(folders[name], "empty class folder")
      items += [(len(items) + i, p, label) + (
          (table[p.stem].tolist(),) if table is not None else ())
                for i, p in enumerate(images)]
    parts = splits.stratified_split([item[2] for item in items],
                                    self.options["splits"],
                                    seed=self.options["seed"])
    return {k: [items[i] for i in v] for k, v in parts.items()}

  def _example(self, item):
    key, path, label, *multilabels = item
    try:
      image = read_rgb(path)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      self.invalid(path, f"unreadable image ({e})")
      return None
    example = {"image": image, "label": label,
               "filename": f"{self.CLASSES[label]}/{epath.Path(path).name}"}
    if multilabels:
      example["labels"] = np.asarray(multilabels[0], np.uint8)
    return key, example


class RsUcmerced(_RgbFolders):
  """UC Merced Land Use (Yang and Newsam 2010): 21 classes x 100 aerial RGB
  images, 256 x 256 (44 slightly smaller), 0.3 m."""

  CLASSES = UCMERCED_CLASSES
  MULTILABELS = UCMERCED_MULTILABELS
  DEFAULT_OPTIONS = {"splits": None, "multilabels": None}


class RsAid(_RgbFolders):
  """AID (Xia et al. 2017): 10,000 aerial RGB images, 30 classes, 600 x 600."""

  CLASSES = AID_CLASSES
