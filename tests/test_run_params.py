"""``xpuflow run --param``: every value is checked (name, type, the step's own check) before any task runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xpuflow import FlowError
from xpuflow.dsl.load import load_flow

USER_FLOW = '''
from xpuflow import Compute, Output, flow, step


def check_copies(copies, word, **_):
    if copies < 1:
        raise ValueError(f"write: copies={copies!r} is not valid: at least one copy.")


@step(compute=Compute.cpu(), check=check_copies)
def write(out: Output, copies: int = 1, word: str = "hi", ratio: float = 0.5, loud: bool = False):
    """Write ``word`` ``copies`` times."""
    import os
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "words.txt"), "w") as f:
        f.write((word.upper() if loud else word) * copies)


@step(compute=Compute.cpu())
def count(src: "Input", out: Output):
    import os
    os.makedirs(out, exist_ok=True)
    n = len(open(os.path.join(src, "words.txt")).read())
    open(os.path.join(out, "n.txt"), "w").write(str(n))


@flow(name="words")
def words(copies: int = 1, word: str = "hi", ratio: float = 0.5, loud: bool = False):
    first = write(copies=copies, word=word, ratio=ratio, loud=loud)
    count(src=first.output)
'''


@pytest.fixture()
def user_flow(tmp_path) -> Path:
    path = tmp_path / "project" / "flows.py"
    path.parent.mkdir()
    path.write_text(USER_FLOW.replace('"Input"', "Input").replace("import Compute, Output", "import Compute, Input, Output"))
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow", "run", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def refused(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr


@pytest.mark.parametrize(("param", "pattern"), [
    ("epochs=-1", r"flow 'train_gpu_export_npu', task 'train' \(from parameter epochs\): train: epochs=-1 is not valid: "
                  r"a whole number >= 1\."),
    ("epochs=0", r"train: epochs=0 is not valid"),
    ("epochs=abc", r"parameter epochs='abc' is not valid: a whole number \(an int64\), as parameter epochs of flow "
                   r"'train_gpu_export_npu' is declared \(default 10\)\. Fix: e\.g\. --param epochs=10\."),
    ("epochs=1.5", r"parameter epochs='1\.5' is not valid"),
    ("epochs=true", r"parameter epochs='true' is not valid"),
    ("epochs=99999999999999999999", r"parameter epochs='99999999999999999999' is not valid"),
    ("seed=\u0663", r"parameter seed='\u0663' is not valid"),
    ("epoch=3", r"parameter 'epoch' is not valid: one of input_uri, epochs, seed, target\. Did you mean 'epochs'\?"),
    ("epochs", r"--param 'epochs' is not valid: write KEY=VALUE"),
])
def test_a_bad_param_is_refused_before_any_step_runs(tmp_path, param, pattern):
    """epochs=-1 used to be reported in run.log after preprocess had run."""
    root = tmp_path / "runs"
    refused(run("train_gpu_export_npu", "--param", param, "--root", str(root), cwd=tmp_path), pattern)
    assert not root.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(("param", "pattern"), [
    ("copies=0", r"flow 'words', task 'write' \(from parameter copies\): write: copies=0 is not valid: at least one copy"),
    ("ratio=nan", r"parameter ratio='nan' is not valid: a finite number"),
    ("ratio=1e999", r"parameter ratio='1e999' is not valid"),
    ("loud=yes", r"parameter loud='yes' is not valid: true or false"),
])
def test_a_user_flow_param_is_checked_by_type_and_by_its_step(tmp_path, user_flow, param, pattern):
    root = tmp_path / "runs"
    refused(run(str(user_flow), "--param", param, "--root", str(root), cwd=tmp_path), pattern)
    assert not root.exists()


def test_values_pass_with_their_declared_types_in_process(tmp_path, user_flow):
    flow = load_flow(str(user_flow))
    outputs = flow.run(str(tmp_path / "out"), copies=3, word="ab", loud=True)
    assert Path(outputs["count"]["out"], "n.txt").read_text() == "6"
    assert Path(outputs["write"]["out"], "words.txt").read_text() == "ABABAB"


@pytest.mark.parametrize(("params", "pattern"), [
    ({"copies": -1}, r"task 'write' \(from parameter copies\): write: copies=-1 is not valid"),
    ({"copies": "3"}, r"parameter copies='3' is not valid: a whole number"),
    ({"copies": True}, r"parameter copies=True is not valid"),
    ({"ratio": float("inf")}, r"parameter ratio=inf is not valid: a finite number"),
    ({"copiez": 2}, r"parameter 'copiez' is not valid: .*Did you mean 'copies'\?"),
])
def test_flow_run_checks_before_the_first_task(tmp_path, user_flow, params, pattern):
    flow = load_flow(str(user_flow))
    with pytest.raises(FlowError, match=pattern):
        flow.run(str(tmp_path / "out"), **params)
    assert not (tmp_path / "out").exists()


def test_a_pipeline_file_that_raises_on_import_is_one_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text(textwrap.dedent("""\
        import os
        raise RuntimeError("cannot reach the feature store")
        """))
    for verb in (["run", str(bad)], ["compile", str(bad), "--backend", "kfp", "--cluster", "gke", "-o",
                                      str(tmp_path / "p.yaml")], ["plan", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "xpuflow", *verb], capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)
        refused(proc, r"raised RuntimeError on import: cannot reach the feature store\. Fix: run `python .*broken\.py`")
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("name", ["train_gpu_export_npu", "train_tpu", "rag_index"])
def test_every_example_flow_passes_its_own_checks_with_its_defaults(name):
    from xpuflow.dsl.params import check_params

    flow = load_flow(name)
    assert check_params(flow, {}) == {k: p.default for k, p in flow.params.items()}


def test_train_tpu_checks_its_epochs_before_running(tmp_path):
    root = tmp_path / "runs"
    refused(run("train_tpu", "--param", "epochs=0", "--root", str(root), cwd=tmp_path),
            r"task 'train_tpu' \(from parameter epochs\): train_tpu: epochs=0 is not valid")
    assert not root.exists()


@pytest.mark.parametrize(("default", "pattern"), [
    ("10**30", r"@flow 'big': parameter n=1000000000000000000000000000000 is not valid: an int within int64"),
    ("-(2**63)", r"parameter n=-9223372036854775808 is not valid"),
])
def test_a_flow_parameter_default_beyond_int64_is_refused(tmp_path, default, pattern):
    """KFP wrote 10**30 as defaultValue 1.0e+30: a float, silently."""
    path = tmp_path / "big.py"
    path.write_text(USER_FLOW.replace("import Compute, Output", "import Compute, Input, Output").replace('"Input"', "Input")
                    + f"\n\n@flow(name='big')\ndef big(n: int = {default}):\n    write(copies=1)\n")
    with pytest.raises(FlowError, match=pattern):
        load_flow(str(path))


@pytest.mark.parametrize(("code", "pattern"), [
    ("ratio: float = float('nan')", r"@step .*big_step: parameter ratio=nan is not valid: an int within int64 or a finite"),
    ("n: int = 2**63", r"parameter n=9223372036854775808 is not valid"),
])
def test_a_step_parameter_default_out_of_bounds_is_refused(tmp_path, code, pattern):
    path = tmp_path / "big_step.py"
    path.write_text(f"from xpuflow import Output, step\n\n\n@step\ndef big_step(out: Output, {code}):\n    pass\n")
    with pytest.raises(FlowError, match=pattern):
        from xpuflow.dsl.load import load_file

        load_file(path)


def test_a_task_constant_beyond_int64_is_refused(tmp_path):
    path = tmp_path / "const.py"
    path.write_text(USER_FLOW.replace("import Compute, Output", "import Compute, Input, Output").replace('"Input"', "Input")
                    .replace("first = write(copies=copies,", "first = write(copies=10**20,"))
    with pytest.raises(FlowError, match=r"flow 'words', task 'write': copies=100000000000000000000 is not valid: an int "
                                        r"within int64"):
        load_flow(str(path))
