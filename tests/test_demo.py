import json

from muldml.cli import main


def test_demo_end_to_end_small(tmp_path, capsys):
    """The demo's whole path on a few identities and one epoch (the real one: scripts/demo.sh)."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--subjects", "4", "--quiet", "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "| cnn |" in printed and "| mul-dml |" in printed
    report = (out / "report.md").read_text()
    for preset in ("cnn", "mul-dml"):
        assert f"![{preset} confusion]({preset}/confusion.png)" in report
        assert (out / preset / "confusion.png").is_file() and (out / preset / "curves.png").is_file()
        assert (out / preset / "metrics.json").is_file()
    # A second run resumes finished runs and reuses the data instead of redoing them.
    mtime = (out / "cnn" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--epochs", "1", "--subjects", "4", "--quiet", "--num-workers", "0"]) == 0
    assert (out / "cnn" / "checkpoint.pt").stat().st_mtime_ns == mtime
    # The same folder with a runtime option that changes learning: refused in one line, or replaced.
    capsys.readouterr()
    small = ["demo", "--out", str(out), "--epochs", "1", "--subjects", "4", "--quiet", "--num-workers", "0"]
    assert main([*small, "--amp", "bf16"]) == 2
    assert "amp 'off' → 'bf16'" in capsys.readouterr().err
    assert main([*small, "--amp", "bf16", "--overwrite"]) == 0
    assert json.loads((out / "cnn" / "result.json").read_text())["settings"]["amp"] == "bf16"
