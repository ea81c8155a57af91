"""mvmic: task-driven compression of medical images."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # mvmic.compress / mvmic.decompress, imported lazily so that `import mvmic` stays light.
    if name in ("compress", "decompress"):
        from mvmic import coding

        return getattr(coding, name)
    raise AttributeError(f"module 'mvmic' has no attribute {name!r}")
