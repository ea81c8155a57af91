"""Where shared helpers live (issue 15): one definition each, found beside their users."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mvmic", "data_modules")


def _suffix_tuples(path: Path) -> list[str]:
    """Names assigned a literal tuple of file suffixes that includes ``.png`` in ``path``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            values = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
            if ".png" in values and ".jpg" in values:
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def test_image_suffixes_are_defined_once_in_io():
    found = {
        str(p.relative_to(REPO)): names
        for pkg in PACKAGES
        for p in sorted((REPO / pkg).rglob("*.py"))
        if (names := _suffix_tuples(p))
    }
    assert found == {"mvmic/io/formats.py": ["IMAGE_SUFFIXES"]}
    from data_modules.reading import IMAGE_EXTS
    from mvmic.io import DICOM_SUFFIXES, IMAGE_SUFFIXES

    assert IMAGE_EXTS == (*IMAGE_SUFFIXES, *DICOM_SUFFIXES)


def test_shared_helpers_live_outside_the_segmentation_task(tmp_path):
    from mvmic.metrics import likelihoods_bpp
    from mvmic.palette import PALETTE
    from mvmic.weights import load_weights

    assert PALETTE.shape == (6, 3) and float(PALETTE.max()) <= 1.0
    half = {"y": torch.full((1, 4, 2, 2), 0.5)}  # 16 latents at 1 bit each over 4 pixels
    assert float(likelihoods_bpp(half, 4)) == 4.0
    net = torch.nn.Linear(2, 2)
    torch.save({"state_dict": {f"task.{k}": v * 0 for k, v in net.state_dict().items()}},
               tmp_path / "w.ckpt")  # fmt: skip
    load_weights(net, tmp_path / "w.ckpt", prefixes=("task.",))
    assert float(net.weight.detach().abs().sum()) == 0.0


def test_evaluation_modules_stay_small():
    sizes = {
        p.name: len(p.read_text().splitlines()) for p in (REPO / "mvmic/evaluation").glob("*.py")
    }
    assert sizes and max(sizes.values()) <= 400, sizes


def test_no_mvmic_module_over_400_lines():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines())
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
    }
    assert {k: v for k, v in sizes.items() if v > 400} == {}


def test_task_outputs_have_one_writer():
    # decompress --task, predict, the serve answers and send all encode through io/task_outputs
    for path in ("mvmic/coding_cli.py", "mvmic/prediction.py", "mvmic/serve/app.py",
                 "mvmic/serve/send.py", "mvmic/serve/inference.py"):  # fmt: skip
        text = (REPO / path).read_text()
        assert "task_outputs" in text, path
        assert "Image.fromarray" not in text and "Nifti1Image(" not in text, path
    # nothing imports another module's private helpers (what they share is public)
    for p in sorted((REPO / "mvmic").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mvmic"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{p.relative_to(REPO)} imports {private} from {node.module}"
