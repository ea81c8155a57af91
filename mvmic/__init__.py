"""mvmic: task-driven compression of medical images."""

import warnings

__version__ = "0.1.0"

# Deprecations inside our dependencies, raised on every mvmic command whatever the user does:
# CompressAI imports torch_geometric (torch.jit.script at import), and Lightning's pytree helper
# uses torch's LeafSpec. They are theirs to act on, not our users'.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def __getattr__(name: str):
    # mvmic.compress / mvmic.decompress, imported lazily so that `import mvmic` stays light.
    if name in ("compress", "decompress"):
        from mvmic import coding

        return getattr(coding, name)
    raise AttributeError(f"module 'mvmic' has no attribute {name!r}")
