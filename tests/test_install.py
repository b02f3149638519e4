"""Installing muldml into one's own environment: the README's steps, --version, and a missing
facenet-pytorch named in one line with its install command."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from inference_fixtures import tiny_checkpoint
from PIL import Image
from skimage import data

import muldml
from muldml.cli import main
from muldml.data.faces import FACENET_INSTALL

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"muldml {muldml.__version__}"


def test_missing_facenet_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails, as where it is not installed
    photo = tmp_path / "src" / "happy" / "a.png"
    photo.parent.mkdir(parents=True)
    Image.fromarray(data.astronaut()).resize((64, 64)).save(photo)
    run = tiny_checkpoint(tmp_path / "run")
    for command in (["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--dataset", "folder", "--quiet"],
                    ["predict", str(photo), "--checkpoint", str(run), "--out", str(tmp_path / "p"), "--device", "cpu",
                     "--quiet"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.startswith("muldml: error: face detection needs facenet-pytorch") and "\n" not in err, err
        assert FACENET_INSTALL in err and "--no-detect" in err


def _readme_own_environment_commands() -> list[str]:
    """The shell lines of the README's own-environment section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n#{2,3} ", text.split("### Install into your own environment", 1)[1])[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S)[1]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.slow
def test_the_readmes_own_environment_steps_work_in_a_fresh_venv(tmp_path):
    """A fresh venv follows the README's section (pip from the local checkout, offline; the heavy
    stack already installed is reused through a .pth instead of downloaded again), then runs
    `muldml --version` and `muldml prepare` on a photo, with face detection."""
    commands = _readme_own_environment_commands()
    # pip builds a local folder in place: install from a copy, so that the checkout is not written to.
    source = tmp_path / "muldml-src"
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for part in ("muldml", "kernels"):
        shutil.copytree(ROOT / part, source / part, ignore=junk)
    for part in ("setup.py", "README.md"):
        shutil.copy(ROOT / part, source / part)
    assert any(FACENET_INSTALL in line for line in commands) and any("pip install" in line and "muldml" in line
                                                                     for line in commands)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Reuse what is installed here (torch, torchvision, pip, ...), but not this checkout's muldml.
    ours = {Path(sysconfig.get_paths()["purelib"]).resolve()}
    reused = [p for p in sys.path if p.endswith("-packages") and Path(p).resolve() not in ours and Path(p).is_dir()]
    reused += [str(p) for p in ours]  # last: muldml installed into the venv comes first
    (site / "reuse.pth").write_text("\n".join(reused) + "\n")
    env = os.environ | {"PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1",
                        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    for line in commands:
        line = line.replace("pip install", f"{python} -m pip install -q --no-build-isolation")
        line = line.replace("/path/to/muldml", str(source))
        done = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    where = subprocess.run([str(python), "-c", "import muldml; print(muldml.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    version = subprocess.run([str(venv / "bin" / "muldml"), "--version"], env=env, capture_output=True, text=True)
    assert version.stdout.strip() == f"muldml {muldml.__version__}", version
    src = tmp_path / "photos" / "happy"
    src.mkdir(parents=True)
    Image.fromarray(data.astronaut()).resize((160, 160)).save(src / "astronaut.png")
    prepared = subprocess.run([str(venv / "bin" / "muldml"), "prepare", str(src.parent), str(tmp_path / "out"),
                               "--dataset", "folder", "--size", "48", "--rotations", "0", "--quiet"],
                              env=env, capture_output=True, text=True)
    assert prepared.returncode == 0 and "1 source image(s) ok" in prepared.stdout, prepared
    assert (tmp_path / "out" / "happiness" / "happy__astronaut.png").is_file()


def test_tensorboard_option_logs_the_history(tmp_path):
    """With the tensorboard extra installed, train writes RUN/tensorboard/ holding history.csv's numbers."""
    from fixtures import make_image_folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from muldml.config import Runtime, preset_config
    from muldml.data.folder import scan_folder
    from muldml.training import fit

    samples, classes = scan_folder(make_image_folder(tmp_path / "faces", subjects=3, per_subject=1),
                                   subject_regex=r"^(S\d+)_")
    cfg = preset_config("mul-dml", tau_min=0.15, tau_max=0.25, tau_step=0.1, slice_dim=8, batch_size=6, epochs=2,
                        image_size=32, lr=1e-3, seed=0)
    cfg.classes = classes
    train = [s for s in samples if s.subject != "S002"]
    val = [s for s in samples if s.subject == "S002"]
    state = fit(cfg, train, val, tmp_path / "run", Runtime(device="cpu", num_workers=0), progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for row in state["history"]:
        for key in ("train_ce", "train_triplet_0", "val_acc", "lr"):
            assert scalars[key.replace("_", "/", 1)][row["epoch"]] == pytest.approx(row[key], rel=1e-6), key
