"""The f5-tts names the engine uses, imported without f5-tts's training code and rarely-used extras.

``import f5_tts.model.<anything>`` first runs ``f5_tts/model/__init__.py``, which imports the trainer
(wandb, accelerate) and, through it, the dataset code (datasets, pandas): about 2 s and hundreds of MB
that a server never uses. Three standard import-system tools keep them out:

* ``f5_tts.model`` is registered as a *light package*: the real package's spec and ``__path__``, not
  executed, so its submodules (``cfm``, ``backbones.dit``, ``modules``, ``utils``) import as usual and
  the package's names (``CFM``, ``DiT``, ``Trainer``, ...) resolve on first use (PEP 562 ``__getattr__``).
* ``einx`` (imported by x_transformers for layers F5 does not use; it pulls in sympy and torch._dynamo) is
  loaded with ``importlib.util.LazyLoader``: executed on first attribute access, i.e. never here.
* ``librosa.filters`` (BigVGAN mel filters; we only serve Vocos) and ``pypinyin`` (Chinese text only) are
  from-imported by f5-tts, which would execute them at once. While f5-tts's modules import, stand-ins
  whose names import the real module on first call take their place in ``sys.modules``; afterwards the
  stand-ins are removed, so anyone else importing those packages gets the real ones.

Every engine module imports its f5-tts names from here. ``tests/test_cold_start.py`` fails if a future
f5-tts release brings the training modules back into the serving process.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_MODEL_PACKAGE = "f5_tts.model"
# f5_tts/model/__init__.py's names and the modules that define them, imported on first use.
_PACKAGE_NAMES = {
    "CFM": "f5_tts.model.cfm",
    "DiT": "f5_tts.model.backbones.dit",
    "MMDiT": "f5_tts.model.backbones.mmdit",
    "UNetT": "f5_tts.model.backbones.unett",
    "Trainer": "f5_tts.model.trainer",
}


class _Deferred:
    """Stands for ``module.name``: imports the module on first call or attribute access."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def _target(self) -> Any:
        return getattr(importlib.import_module(self._module), self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)


# What f5-tts from-imports out of packages only some models or languages need.
_STAND_INS = {
    "librosa.filters": ("mel",),  # f5_tts.model.modules: BigVGAN mel filters
    "pypinyin": ("Style", "lazy_pinyin"),  # f5_tts.model.utils: Chinese text only
}


@contextmanager
def _stand_ins(spec: dict[str, tuple[str, ...]]) -> Iterator[None]:
    placed: dict[str, types.ModuleType] = {}
    for module, names in spec.items():
        if module in sys.modules:  # already really imported: nothing to save
            continue
        stand_in = types.ModuleType(module, "deferred by engine.f5")
        for name in names:
            setattr(stand_in, name, _Deferred(module, name))
        placed[module] = sys.modules[module] = stand_in
    try:
        yield
    finally:
        for module, stand_in in placed.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


def _lazy_module(name: str) -> None:
    """The LazyLoader recipe from the importlib docs: ``import name`` binds a module that executes on
    first attribute access."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return  # not installed: the real import will say so where it is needed
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)


def _light_package(name: str, names: dict[str, str]) -> None:
    """Register package ``name`` without running its ``__init__``; ``names`` resolve on first use."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(f"{name} is not installed")
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> Any:
        if attr not in names:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        value = getattr(importlib.import_module(names[attr]), attr)
        setattr(package, attr, value)
        return value

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    setattr(importlib.import_module(parent), child, package)


def _import_f5() -> None:
    _light_package(_MODEL_PACKAGE, _PACKAGE_NAMES)
    _lazy_module("einx")
    with _stand_ins(_STAND_INS):
        for module in ("f5_tts.model.utils", "f5_tts.model.modules", "f5_tts.model.cfm",
                       "f5_tts.model.backbones.dit", "f5_tts.model.backbones.unett"):
            importlib.import_module(module)


_import_f5()

# The names below are f5-tts's own objects; the imports above only decided how their modules load.
from f5_tts.model.backbones.dit import DiT  # noqa: E402
from f5_tts.model.backbones.unett import UNetT  # noqa: E402
from f5_tts.model.cfm import CFM  # noqa: E402
from f5_tts.model.modules import AttnProcessor  # noqa: E402
from f5_tts.model.utils import (  # noqa: E402
    convert_char_to_pinyin,
    get_epss_timesteps,
    lens_to_mask,
    list_str_to_idx,
)
from x_transformers.x_transformers import apply_rotary_pos_emb  # noqa: E402

__all__ = [
    "CFM",
    "AttnProcessor",
    "DiT",
    "UNetT",
    "apply_rotary_pos_emb",
    "convert_char_to_pinyin",
    "get_epss_timesteps",
    "lens_to_mask",
    "list_str_to_idx",
]
