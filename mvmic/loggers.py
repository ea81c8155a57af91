"""Lightning's loggers as mvmic's configs use them."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` without its deprecated ``anonymous`` init argument.

    Lightning always passes ``anonymous`` to ``wandb.init``, and current wandb warns on every
    run that the setting has no effect; this drops it unless the user set it.
    """

    def __init__(self, *args: Any, anonymous: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)
