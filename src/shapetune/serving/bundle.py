"""MONAI bundle export: a verified ShapeTune export rewritten in MONAI's bundle layout, so a lab that shares models
as bundles can load a ShapeTune model with ``monai.bundle.ConfigParser`` like any other.

    DIR/configs/metadata.json    versions, task, and ``network_data_format``: 2 x G^3 masks (ED, ES) in; the
                                 reconstruction logits (2 x G^3) and p(HCM) out
    DIR/configs/inference.json   ``network_def`` (:class:`BundleNetwork`, the model's config inline), ``network``,
                                 the checkpoint path and a ``load`` expression that reads it with weights_only
    DIR/configs/template.json    the template grid and preprocessing the inputs must follow (from the export)
    DIR/models/model.pt          the state dict (tensors only: it loads with ``torch.load(..., weights_only=True)``)
    DIR/docs/README.md           the model card and how to load the bundle

``metadata.json`` names its schema but is not validated against it here: MONAI's ``verify_metadata`` downloads the
schema, and nothing is downloaded at run time; the tests check the schema's required fields themselves.
"""

from __future__ import annotations

import json
from importlib import metadata as dist
from pathlib import Path

import torch
from torch import nn

from shapetune import __version__
from shapetune.config import TrainConfig
from shapetune.io import staged_folder
from shapetune.models.config import ModelConfig
from shapetune.models.registry import build_model

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
# The fields MONAI's bundle metadata schema requires (checked by the tests, as verify_metadata would download it).
REQUIRED_METADATA = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                     "required_packages_version", "task", "description", "authors", "copyright",
                     "network_data_format")


class BundleNetwork(nn.Module):
    """A ShapeTune cardiac model as MONAI expects a bundle's network: ``forward`` maps a ``[B, 2, G, G, G]`` float
    mask batch (ED, ES myocardium) to the reconstruction logits of the same shape.

    Args:
        model: the model section of the training config (``shapetune.models.ModelConfig`` as a dict).
    """

    def __init__(self, model: dict) -> None:
        super().__init__()
        self.net = build_model(ModelConfig.model_validate(model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).logits

    @torch.no_grad()
    def hcm_probability(self, x: torch.Tensor) -> torch.Tensor:
        """p(HCM) from the classifier on the top latent, ``[B, 1]``."""
        return torch.sigmoid(self.net(x).cls_logit.float())[:, None]


def _version(package: str) -> str:
    try:
        return dist.version(package)
    except dist.PackageNotFoundError:
        return "not installed"


def bundle_metadata(cfg: TrainConfig, metrics: dict, template: dict) -> dict:
    """``configs/metadata.json`` for the exported model ``cfg`` (its export's ``metrics.json`` and template)."""
    g = cfg.model.grid
    channels = template.get("channels", ["ED myocardium", "ES myocardium"])
    v = metrics.get("validation", {})
    return {
        "schema": SCHEMA,
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported by ShapeTune {__version__} from trial {metrics.get('trial_id')} "
                               f"({metrics.get('selection')})"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": _version("numpy"),
        # MONAI 1.6 folds optional_packages_version into this field (it warns on the old name)
        "required_packages_version": {"shapetune": __version__, "nibabel": _version("nibabel")},
        "name": f"ShapeTune {cfg.model.name} left-ventricle shape model",
        "task": "Reconstruction and healthy-vs-HCM classification of LV myocardium shapes at ED and ES",
        "description": f"A {cfg.model.name} (latent sizes {cfg.model.latent_dims}, bottom to top) trained by ShapeTune "
                       f"on {g}^3 template-aligned masks; validation Dice ED {v.get('val_dice_ed', float('nan')):.3f}, "
                       f"ES {v.get('val_dice_es', float('nan')):.3f}, accuracy {v.get('val_acc', float('nan')):.3f}",
        "authors": "ShapeTune",
        "copyright": "Copyright (c) the model's authors",
        "intended_use": "Research on LV shape modelling; not a medical device, not for diagnosis",
        "data_source": f"ShapeTune prepared dataset {metrics.get('data')} (cohort {template.get('source_dataset')})",
        "data_type": "nifti",
        "image_classes": "2 channels: binary myocardium masks at ED and ES on the template grid "
                         "(configs/template.json)",
        "pred_classes": "2 channels: reconstruction logits at ED and ES (> 0: myocardium)",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "segmentation", "modality": "MR", "num_channels": 2,
                "spatial_shape": [g, g, g], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {str(i): c for i, c in enumerate(channels)}}},
            "outputs": {
                "pred": {"type": "image", "format": "logits", "num_channels": 2, "spatial_shape": [g, g, g],
                         "dtype": "float32", "value_range": [], "is_patch_data": False,
                         "channel_def": {str(i): f"{c} logit" for i, c in enumerate(channels)}},
                "hcm_probability": {"type": "probabilities", "format": "classification", "num_channels": 1,
                                    "spatial_shape": [1], "dtype": "float32", "value_range": [0, 1],
                                    "is_patch_data": False, "channel_def": {"0": "p(HCM)"},
                                    "note": "network.hcm_probability(image)"}}},
    }


INFERENCE = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    "checkpoint": "$@bundle_root + '/models/model.pt'",
    "network": "$@network_def.to(@device)",
    "load": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
}


def write_bundle(model: nn.Module, cfg: TrainConfig, template: dict, metrics: dict, card: str, out: Path,
                 force: bool = False) -> Path:
    """Write a verified export's model as a MONAI bundle at ``out`` (published in one rename).

    Args:
        model: the export's model, its weights loaded (``serving.export.verify_export``).
        cfg, template, metrics, card: the export's config, ``template.json``, ``metrics.json`` and model card.
        out: a new or empty folder, or a previous bundle (replaced only with ``force``).
        force: replace a previous bundle written by ShapeTune.

    Returns:
        ``out``.

    Raises:
        OutputError: ``out`` holds something ShapeTune did not write, or a previous bundle without ``force``.
    """
    wrapper = BundleNetwork(cfg.model.model_dump(mode="json"))
    wrapper.net.load_state_dict(model.state_dict())
    with staged_folder(out, "monai-bundle", force) as tmp:
        for sub in ("configs", "models", "docs"):
            (tmp / sub).mkdir()
        meta = bundle_metadata(cfg, metrics, template)
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
        network_def = {"_target_": f"{BundleNetwork.__module__}.{BundleNetwork.__name__}",
                       "model": cfg.model.model_dump(mode="json")}
        (tmp / "configs" / "inference.json").write_text(json.dumps({**INFERENCE, "network_def": network_def},
                                                                   indent=2))
        (tmp / "configs" / "template.json").write_text(json.dumps(template, indent=2))
        torch.save({k: v.detach().cpu().contiguous() for k, v in wrapper.state_dict().items()},
                   tmp / "models" / "model.pt")
        (tmp / "docs" / "README.md").write_text(card + USAGE)
    return Path(out)


USAGE = """
## Loading this MONAI bundle
```python
from monai.bundle import ConfigParser
parser = ConfigParser()
parser.read_config("configs/inference.json"); parser.read_meta("configs/metadata.json")
parser["bundle_root"] = "."          # this folder
net = parser.get_parsed_content("network"); parser.get_parsed_content("load"); net.eval()
logits = net(masks)                  # masks: float [B, 2, G, G, G] (ED, ES) on the template of configs/template.json
p_hcm = net.hcm_probability(masks)   # [B, 1]
```
The network class comes from the `shapetune` package (`pip install shapetune`, the version in `metadata.json`).
Masks must be prepared as ShapeTune prepares them (`shapetune predict` does it from NIfTI label maps).
"""
