"""The runtime wheel (issue #11): no development tooling in it, its package data in it, and nothing in
it imports a package the runtime install does not bring (test-only packages, the local broker)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import ROOT

# import name of each runtime dependency (and what they bring that the code imports directly)
RUNTIME_IMPORTS = {
    "asyncpg",
    "faststream",
    "aiokafka",
    "pydantic",
    "pydantic_settings",
    "pydantic_core",
    "orjson",
    "redis",
    "hiredis",
    "uvloop",
    "fastapi",
    "starlette",
    "uvicorn",
    "jwt",
    "prometheus_client",
    "cryptography",
    "anyio",
}


def _wheel(tmp_path: Path) -> zipfile.ZipFile:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("worker", "contracts"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl")))


def test_the_runtime_wheel_leaves_tooling_out_and_imports_only_runtime_packages(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    names = wheel.namelist()
    assert not [n for n in names if n.startswith(("worker/bench/", "worker/local/", "tests/"))]
    for data in (
        "worker/adapters/redis_apply.lua",
        "worker/adapters/record_dict_1.txt",
        "contracts/asyncapi.json",
        "worker/domain/policies/nanchang-2023.toml",
        "worker/domain/warning/thresholds.toml",
        "worker/records/migrations/001_records.sql",
    ):
        assert data in names, data
    foreign = set()
    for name in names:
        if name.endswith(".py"):
            for node in ast.walk(ast.parse(wheel.read(name))):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                foreign |= {
                    f"{name}: {t}"
                    for t in tops
                    if t not in sys.stdlib_module_names and t not in RUNTIME_IMPORTS | {"worker", "contracts"}
                }
    assert foreign == set()


def test_requires_python_is_not_narrower_than_the_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert any(dep.startswith("prometheus-client") for dep in project["dependencies"])


def _pinned(lock: str) -> set[str]:
    import re

    text = (ROOT / lock).read_text()
    return {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)}


def test_the_locks_pin_every_dependency() -> None:
    """A dependency added to pyproject.toml without `make lock` fails here."""
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(spec: str) -> str:
        return re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")

    runtime = {name(d) for d in project["dependencies"]}
    dev = {name(d) for d in project["optional-dependencies"]["dev"]}
    assert runtime <= _pinned("requirements.lock")
    assert runtime | dev <= _pinned("requirements-dev.lock")
    assert "-r requirements-dev.lock" in (ROOT / "Makefile").read_text()


def test_pre_commit_runs_ruff_and_mypy() -> None:
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert any("ruff check" in e for e in entries) and any("ruff format" in e for e in entries)
    assert any("mypy" in e for e in entries)
