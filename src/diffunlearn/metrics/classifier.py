"""A small CNN trained once per data set on its labels: the offline feature extractor.

Its penultimate layer gives the features for the Frechet distance and precision / recall, its logits
the Inception-Score analogue. Rows computed with it are labelled ``classifier`` and never mixed with
Inception rows, since the two scales are not comparable.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NAME = "classifier"


def build_classifier(channels: int, num_classes: int, width: int, feature_dim: int):
    import torch.nn as nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(2 * width, feature_dim), nn.GELU(),
            )
            self.head = nn.Linear(feature_dim, num_classes)

        def forward(self, x):
            f = self.body(x)
            return f, self.head(f)

    return SmallCNN()


def train_classifier(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                     val_labels: np.ndarray, cfg: dict, device="cpu", log=print):
    """Fit the CNN (AdamW, cross-entropy, seeded); return (model, info dict with validation accuracy)."""
    import torch

    from diffunlearn.data import to_model_space

    torch.manual_seed(cfg["seed"])
    num_classes = int(max(train_labels.max(), val_labels.max() if len(val_labels) else 0)) + 1
    model = build_classifier(train_images.shape[-1], num_classes, cfg["width"], cfg["feature_dim"]).to(device)
    x = to_model_space(train_images).to(device)
    y = torch.from_numpy(train_labels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    g = torch.Generator().manual_seed(cfg["seed"])
    for step in range(cfg["steps"]):
        idx = torch.randint(0, len(x), (cfg["batch_size"],), generator=g).to(device)
        _, logits = model(x[idx])
        loss = torch.nn.functional.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log(f"classifier step {step + 1} loss {loss.item():.4f}")
    model.eval()
    acc = float("nan")
    if len(val_images):
        with torch.inference_mode():
            _, logits = model(to_model_space(val_images).to(device))
        acc = float((logits.argmax(1).cpu().numpy() == val_labels).mean())
    info = {"channels": int(train_images.shape[-1]), "num_classes": num_classes, "width": cfg["width"],
            "feature_dim": cfg["feature_dim"], "validation_accuracy": acc, "image_size": int(train_images.shape[1])}
    return model, info


def save_classifier(folder, model, info: dict) -> None:
    from safetensors.torch import save_file

    from diffunlearn.io import atomic_path

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(info, indent=1, sort_keys=True))


class ClassifierExtractor:
    """Same interface as the Inception extractor: ``features_and_logits(uint8 NHWC) -> (features, logits)``."""

    name = NAME

    def __init__(self, folder, device="cpu"):
        import torch  # noqa: F401
        from safetensors.torch import load_file

        from diffunlearn.io import sha256_file

        folder = Path(folder)
        self.info = json.loads((folder / "config.json").read_text())
        self.weights_path = str(folder / "model.safetensors")
        self.weights_sha256 = sha256_file(self.weights_path)
        self.device = device
        self.model = build_classifier(self.info["channels"], self.info["num_classes"], self.info["width"], self.info["feature_dim"])
        self.model.load_state_dict(load_file(self.weights_path))
        self.model.to(device).eval()

    def iter_features_and_logits(self, images: np.ndarray, batch_size: int = 500):
        import torch

        from diffunlearn.data import to_model_space

        if images.shape[-1] != self.info["channels"] or images.shape[1] != self.info["image_size"]:
            raise ValueError(
                f"classifier was trained on {self.info['image_size']}px images with {self.info['channels']} channels, "
                f"got shape {tuple(images.shape[1:])}"
            )
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                f, logits = self.model(to_model_space(images[s : s + batch_size]).to(self.device))
                yield f.double().cpu().numpy(), logits.double().cpu().numpy()

    def features_and_logits(self, images: np.ndarray, batch_size: int = 500):
        parts = list(self.iter_features_and_logits(images, batch_size))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
