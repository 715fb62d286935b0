from __future__ import annotations

import pytest
import torch

from pipeline.train.device import resolve_device


def test_cpu_and_auto_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("pipeline.train.device._mps_available", lambda: False)
    assert resolve_device("cpu").device == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.device.type == "cpu" and not auto.multi_gpu and auto.ultralytics == "cpu"


def test_auto_prefers_cuda_then_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("pipeline.train.device._mps_available", lambda: True)
    assert resolve_device("auto").device.type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto").device == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("spec", "device", "ids", "ultralytics"),
    [
        ("cuda", "cuda:0", (0,), "0"),
        ("cuda:1", "cuda:1", (1,), "1"),
        ("1", "cuda:1", (1,), "1"),
        ("0,1", "cuda:0", (0, 1), "0,1"),
    ],
)
def test_gpu_specs(
    spec: str, device: str, ids: tuple[int, ...], ultralytics: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    resolved = resolve_device(spec)
    assert resolved.device == torch.device(device)
    assert resolved.device_ids == ids
    assert resolved.multi_gpu == (len(ids) > 1)
    assert resolved.ultralytics == ultralytics


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "0,,1", "0,0"])
def test_malformed_spec_is_rejected(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="train.device"):
        resolve_device(spec)


def test_missing_gpu_is_an_error_not_a_cpu_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="not available"):
        resolve_device("0,1")
