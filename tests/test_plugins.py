"""Plug-ins: a separately installed package adds a strategy and a protocol by name.

The package in `tests/data/plugin_pkg` is built into a wheel here (a wheel is a zip file with
its metadata) and installed by pip into a folder of its own, which the `detente` processes under
test find on their path, as they would find any installed package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, TINY

PLUGIN = ROOT / "tests" / "data" / "plugin_pkg"


def _wheel(out: Path) -> Path:
    """`detente_stubborn-0.1.0-py3-none-any.whl`, built by hand from the plug-in's sources."""
    name, version = "detente_stubborn", "0.1.0"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": (PLUGIN / name / "__init__.py").read_bytes(),
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: detente-stubborn\n"
                             f"Version: {version}\n").encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: detente-tests\nRoot-Is-Purelib: "
                         b"true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": b"[detente.plugins]\nstubborn = detente_stubborn\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the plug-in is installed into, by pip, from its wheel (no network)."""
    folder = tmp_path_factory.mktemp("site")
    wheel = _wheel(tmp_path_factory.mktemp("dist"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-index", "--target", str(folder), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (folder / "detente_stubborn-0.1.0.dist-info" / "entry_points.txt").is_file()
    return folder


def _detente(site: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "detente", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def test_a_plugin_strategy_runs_by_name(site: Path, tmp_path: Path) -> None:
    done = _detente(site, "run", TINY, "--agent", "all=scripted:linear", "--agent",
                    "a=scripted:stubborn", "--rounds", "2", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = tmp_path.glob("tiny/*/")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["agents"]["a"]["strategy"] == "stubborn"
    opening = next(e for e in events if e["id"] == "opening/a")
    assert opening["text"] == "a will not move."
    # Without the plug-in installed, the same name is an unknown strategy, with the known ones.
    plain = subprocess.run([sys.executable, "-m", "detente", "run", str(TINY), "--agent",
                            "a=scripted:stubborn", "--out", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "unknown strategy 'scripted:stubborn'" in plain.stderr


def test_a_plugin_protocol_runs_by_name(site: Path, tmp_path: Path) -> None:
    variant = tmp_path / "one_shot.yaml"
    variant.write_text(yaml.safe_dump({"extends": str(TINY), "id": "one_shot",
                                       "protocol": "one_shot"}))
    done = _detente(site, "run", variant, "--agent", "all=scripted:linear", "--out",
                    tmp_path / "runs")
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs").glob("one_shot/*/")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["rounds_played"] == 1
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["protocol"] == "one_shot"


def test_detente_lists_what_is_installed(site: Path) -> None:
    done = _detente(site, "plugins")
    assert done.returncode == 0, done.stderr
    assert "stubborn" in done.stdout and "detente_stubborn" in done.stdout
    assert "alternating_offers" in done.stdout and "boulware" in done.stdout
