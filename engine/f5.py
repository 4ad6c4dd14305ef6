"""The f5-tts names the engine uses, imported without f5-tts's training code and rarely-used extras.

``import f5_tts.model.<anything>`` first runs ``f5_tts/model/__init__.py``, which imports the trainer
(wandb, accelerate) and, through it, the dataset code (datasets, pandas): about 2 s and hundreds of MB
that a server never uses. Two import-system mechanisms keep them out:

* ``f5_tts.model`` is registered as a *light package*: the real package's spec and ``__path__``, not
  executed, so its submodules (``cfm``, ``backbones.dit``, ``modules``, ``utils``) import as usual and
  the package's names (``CFM``, ``DiT``, ``Trainer``, ...) resolve on first use (PEP 562 ``__getattr__``).
* Modules that f5-tts and its dependencies import at module level but use only on paths a Vocos,
  non-Chinese request never takes (``_STAND_INS``: einx, librosa.filters, pypinyin, scipy.integrate,
  about 3 s together) are replaced in ``sys.modules``, only while f5-tts's modules import, by stand-ins
  whose names import the real module on first use. Afterwards the stand-ins are removed, so anyone
  else importing those packages gets the real ones. (``importlib.util.LazyLoader`` does not work here:
  ``from m import name`` executes the module at once, and torch's ``inspect`` scans of ``sys.modules``
  trigger lazy modules as soon as any op is registered.)

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


class _StandIn(types.ModuleType):
    """A module whose every public name is ``_Deferred``: fine for names used only inside functions.
    Dunder lookups fail as for a plain module, so ``inspect``/``hasattr(m, "__file__")`` scans (torch
    does them while registering ops) cannot trigger the real import, as they would with LazyLoader."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Deferred(self.__name__, name)


# Imported by f5-tts and its dependencies at module level, used only by code paths we never run:
_STAND_INS = (
    "einx",  # x_transformers layers F5 does not use; pulls in sympy and torch._dynamo
    "librosa.filters",  # f5_tts.model.modules: BigVGAN mel filters (we serve Vocos); scipy.signal, numba
    "pypinyin",  # f5_tts.model.utils: Chinese text only (the first such request imports it, ~0.5 s)
    "scipy.integrate",  # torchdiffeq's SciPy solver wrapper; F5 integrates with its own Euler steps
)


@contextmanager
def _stand_ins(modules: tuple[str, ...]) -> Iterator[None]:
    placed: dict[str, types.ModuleType] = {}
    for module in modules:
        if module not in sys.modules:  # already really imported: nothing to save
            placed[module] = sys.modules[module] = _StandIn(module, "deferred by engine.f5")
    try:
        yield
    finally:  # later importers get the real modules; f5-tts keeps the stand-ins it bound
        for module, stand_in in placed.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


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
    with _stand_ins(_STAND_INS):
        for module in ("f5_tts.model.utils", "f5_tts.model.modules", "f5_tts.model.cfm",
                       "f5_tts.model.backbones.dit", "f5_tts.model.backbones.unett"):
            importlib.import_module(module)


def vocos_class() -> Any:
    """``vocos.Vocos``, imported with huggingface_hub deferred. vocos binds ``hf_hub_download`` for
    ``Vocos.from_pretrained``, which we never call (``engine.loader`` fetches the files itself), and the
    hub client's import pulls in httpx and rich: ~0.3 s of every start, for nothing when loading from disk."""
    with _stand_ins(("huggingface_hub",)):
        from vocos import Vocos
    return Vocos


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
