"""Import structure: the loss imports alone, and the layers do not import each other in a circle."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "muldml"


def test_import_muldml_for_the_loss_alone_is_light():
    # torch itself may import tqdm: only what `import muldml` adds to `import torch` counts.
    code = ("import sys, torch\n"
            "torch_own = set(sys.modules)\n"
            "import muldml\n"
            "x = torch.randn(8, 4, requires_grad=True)\n"
            "muldml.MultiThresholdTripletLoss(margins=[0.2, 0.4], slice_dim=2)(x, torch.arange(8) % 2).backward()\n"
            "heavy = sorted(m for m in set(sys.modules) - torch_own "
            "if m.split('.')[0] in ('torchvision', 'tqdm', 'PIL', 'triton') "
            "or m.startswith(('muldml.training', 'muldml.data', 'muldml.kernels.triplet.fused')))\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    assert callable(__import__("muldml").load_model)  # still there, imported on first use


def imports(path: Path) -> set[str]:
    """Every muldml module `path` imports, at any depth of the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("muldml"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("muldml")}
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_between_these_modules():
    graph = {module_name(p): imports(p) for p in ROOT.rglob("*.py")}
    for a, b in [("muldml.cli", "muldml.studies.cli"), ("muldml.training.run", "muldml.training.checkpoint")]:
        assert not (b in graph[a] and a in graph[b]), (a, b)
    assert not any(m == "muldml.cli" or m.startswith("muldml.cli.") for m in graph["muldml.studies.cli"])
    assert "muldml.training.run" not in graph["muldml.training.checkpoint"]
