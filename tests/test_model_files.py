"""A model file cannot choose code: the architecture it names is built only if built in or allowed by the user.

The crafted files name a user module written into tmp_path that leaves a file behind when it is imported
and another when its factory is called, so a test proves the refusal came before any import. The steps
run as users run them: ``xpuflow step ...`` in a subprocess (exit 2, one line), and as functions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runs import env, python

from xpuflow.steps.evaluate import evaluate
from xpuflow.steps.io import StepError
from xpuflow.steps.models import ALLOW_ENV, FORMAT, load_model
from xpuflow.steps.train import train

USER_MODULE = '''
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
(HERE / "imported").write_text("the module ran")


def net(input_dim, num_classes, **kwargs):
    from xpuflow.steps.models import mlp

    (HERE / "called").write_text(repr(kwargs))
    return mlp(input_dim, num_classes, **kwargs)
'''


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train(data=str(data), output=str(out), epochs=1, batch_size=64)
    return out


def crafted(trained: Path, folder: Path, architecture: object, **meta: object) -> Path:
    """``trained``'s model.pt with its metadata naming ``architecture``, and the user package beside it."""
    package = folder / "userpkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_MODULE)
    blob = torch.load(trained / "model.pt", weights_only=True)
    assert blob["format"] == FORMAT
    blob["metadata"] = {**blob["metadata"], "architecture": architecture, **meta}
    model = folder / "model"
    model.mkdir(exist_ok=True)
    torch.save(blob, model / "model.pt")
    return model


def step(name: str, *args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    run_env = env(**extra)
    run_env["PYTHONPATH"] = f"{cwd}:{run_env.get('PYTHONPATH', '')}"  # the user's package is importable
    return subprocess.run([python("main"), "-m", "xpuflow", "step", name, *args], capture_output=True, text=True,
                          env=run_env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("name", ["evaluate", "export", "batch_infer"])
def test_a_model_file_naming_user_code_is_refused_before_import(name, trained, data, tmp_path):
    model = crafted(trained, tmp_path, "userpkg.nets:net")
    extra = ["--target", "cpu-int8"] if name == "export" else []
    proc = step(name, "--model", str(model), "--data", str(data), "--output", str(tmp_path / "out"), *extra,
                cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if "no GPU visible" not in x]  # batch_infer's CPU WARNING
    assert line == (f"xpuflow step: error: model file '{model / 'model.pt'}' names architecture='userpkg.nets:net', "
                    "which is neither built in nor allowed (allowed: xpuflow.steps.models:mlp); nothing was imported. "
                    "Fix: if you trust this file and that code, pass --allow-architecture userpkg.nets:net (or set "
                    "XPUFLOW_ALLOWED_ARCHITECTURES=userpkg.nets:net).")
    assert not (tmp_path / "imported").exists() and not (tmp_path / "called").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("architecture", ["os:kill", "os:system", "builtins:exec", "subprocess:run",
                                          "xpuflow.steps.publish:shutil"])
def test_standard_library_callables_are_refused(architecture, trained, data, tmp_path):
    model = crafted(trained, tmp_path, architecture, model_kwargs={"signal": 9})
    with pytest.raises(StepError, match=rf"names architecture='{architecture}', which is neither built in nor "
                                        r"allowed .*nothing was imported"):
        evaluate(model=str(model), data=str(data), output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("architecture, shown", [
    ("__import__('os').system('id')", r"architecture=\"__import__\('os'\)\.system\('id'\)\""),
    ("userpkg.nets", r"architecture='userpkg\.nets'"),
    (["userpkg.nets", "net"], r"architecture=a list that is not an import path"),
    ("x" * 500, r"architecture=a str that is not an import path"),
])
def test_an_architecture_that_is_not_an_import_path_is_refused(architecture, shown, trained, tmp_path):
    model = crafted(trained, tmp_path, architecture)
    with pytest.raises(StepError, match=rf"records {shown}, which is not an import path 'package\.module:factory'; "
                                        r"nothing was imported\."):
        load_model(model / "model.pt", allow="userpkg.nets:net")
    assert not (tmp_path / "imported").exists()


def test_an_architecture_the_user_allows_is_built(trained, data, tmp_path, monkeypatch):
    model = crafted(trained, tmp_path, "userpkg.nets:net", model_kwargs={"hidden": 128})
    monkeypatch.syspath_prepend(str(tmp_path))
    result = evaluate(model=str(model), data=str(data), output=str(tmp_path / "eval"),
                      allow_architecture="other.pkg:f, userpkg.nets:net")
    assert (tmp_path / "called").read_text() == "{'hidden': 128}"  # the user's factory, with the file's kwargs
    reference = evaluate(model=str(trained), data=str(data), output=str(tmp_path / "ref"))
    assert result["accuracy"] == reference["accuracy"]  # the same weights, built by the user's factory
    sys.modules.pop("userpkg.nets", None)
    sys.modules.pop("userpkg", None)


def test_the_environment_variable_allows_it_too(trained, data, tmp_path):
    model = crafted(trained, tmp_path, "userpkg.nets:net")
    proc = step("batch_infer", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "p"),
                cwd=tmp_path, **{ALLOW_ENV: "userpkg.nets:net"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "called").exists() and (tmp_path / "p" / "predictions.json").exists()
