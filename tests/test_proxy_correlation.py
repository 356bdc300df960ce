"""The correlation benchmark's scoring inputs: Gaussian, 1/f noise, crops of an image file."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from benchmarks.proxy_correlation import input_batch, main
from tools.datasets import get_dataset

CIFAR = get_dataset("cifar10")


def test_every_input_kind_gives_a_standardised_batch_with_the_same_labels(tmp_path):
    gradient = torch.linspace(0, 255, 48).repeat(40, 1)  # a smooth 40x48 "photo"
    pixels = torch.stack([gradient, gradient.flip(1), torch.full_like(gradient, 128)], dim=-1)
    photo = tmp_path / "photo.png"
    Image.fromarray(pixels.to(torch.uint8).numpy()).save(photo)

    batches = {kind: input_batch(kind, batch_size=8, dataset=CIFAR, seed=0, device="cpu")
               for kind in ("gaussian", "pink", str(photo))}
    for batch in batches.values():
        assert batch.inputs.shape == (8, 3, 32, 32) and batch.num_classes == 10
        assert torch.equal(batch.targets, batches["gaussian"].targets)
    for kind in ("pink", str(photo)):
        channel_means = batches[kind].inputs.mean(dim=(0, 2, 3))
        assert torch.allclose(channel_means, torch.zeros(3), atol=1e-4)

    def neighbour_correlation(x):  # natural-image statistics: neighbouring pixels move together
        a, b = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    assert abs(neighbour_correlation(batches["gaussian"].inputs)) < 0.1
    assert neighbour_correlation(batches["pink"].inputs) > 0.5


def test_bad_inputs_are_one_line(tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    for kind, fragment in ((str(tmp_path / "missing.png"), "not gaussian, pink or a readable"),
                           (str(tiny), "smaller than 32x32")):
        with pytest.raises(ValueError, match=fragment):
            input_batch(kind, batch_size=4, dataset=CIFAR, seed=0, device="cpu")
    truth = tmp_path / "missing.csv"
    assert main(["--truth", str(truth), "--sample", "3", "--inputs", "pink"]) == 2
    assert capsys.readouterr().err.startswith("error:")
