"""Shared fixtures: tiny models of three real architectures with LoRA adapters, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from specprobe.terms.datasets import default_data_path  # noqa: E402
from specprobe.testing.tiny_models import ARCHITECTURES, build_tiny_adapter, build_tiny_model  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: skipped, with the reason, when CUDA is not available, unless
    SPECPROBE_GPU_CHECK_CPU=1 (bench/gpu_check.sh's CPU mode), which runs them on the CPU at tiny sizes."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items or os.environ.get("SPECPROBE_GPU_CHECK_CPU") == "1":
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); run bench/gpu_check.sh "
        "on a GPU machine, or set SPECPROBE_GPU_CHECK_CPU=1 to run these on the CPU"
    )
    for item in cuda_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


def _build(tiny_dir: Path, arch: str) -> tuple[Path, Path]:
    base = tiny_dir / f"{arch}-base"
    adapter = tiny_dir / f"{arch}-lora"
    if not base.exists():
        build_tiny_model(arch, base)
        build_tiny_adapter(base, arch, adapter)
    return base, adapter


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_pair(request, tiny_dir) -> tuple[str, Path, Path]:
    """(architecture, base directory, LoRA adapter directory) for each architecture."""
    base, adapter = _build(tiny_dir, request.param)
    return request.param, base, adapter


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir) -> tuple[Path, Path]:
    return _build(tiny_dir, "llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dir) -> tuple[Path, Path]:
    return _build(tiny_dir, "gpt2")


@pytest.fixture(scope="session")
def smedqa_path() -> Path:
    path = default_data_path()
    if not path.exists():
        pytest.skip(f"S-MedQA data not found at {path} (set SPECPROBE_SMEDQA to its path)")
    return path
