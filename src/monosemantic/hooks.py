"""Hook points: a module's path in ``model.named_modules()`` plus ``input`` or ``output``.

``model.layers.6.mlp.down_proj:input`` names the tensor that enters ``down_proj``;
``model.layers.6:output`` the tensor a decoder layer returns (the first element when a module
returns a tuple). The same names work for Hugging Face models, TransformerLens hook modules, the
project's own models and any ``nn.Module``.

- ``capture`` reads activations during a forward pass;
- ``patch`` replaces them with a function of themselves;
- ``run_until`` runs a forward pass only as far as the deepest hook point it needs.

All three are context managers or functions that always remove their hooks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Side = Literal["input", "output"]


class HookPointError(ValueError):
    """A hook point that is malformed or names no module of the model."""


@dataclass(frozen=True)
class HookPoint:
    """A module path and the side (``input`` or ``output``) whose tensor we read or replace."""

    module: str
    side: Side = "output"

    @classmethod
    def parse(cls, spec: str | HookPoint) -> HookPoint:
        """``"path:input"`` / ``"path:output"``; a bare path means its output."""
        if isinstance(spec, HookPoint):
            return spec
        path, sep, side = spec.rpartition(":")
        if not sep:
            path, side = spec, "output"
        if side not in ("input", "output") or not path:
            raise HookPointError(
                f"bad hook point {spec!r}: write MODULE_PATH:input or MODULE_PATH:output, "
                "e.g. 'model.layers.6.mlp:output'"
            )
        return cls(path, side)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.module}:{self.side}"

    def resolve(self, model: nn.Module) -> nn.Module:
        """The module this point names; a clear error listing the nearest names if none."""
        modules = dict(model.named_modules())
        if self.module in modules:
            return modules[self.module]
        names = [n for n in modules if n]
        near = difflib.get_close_matches(self.module, names, n=5, cutoff=0.5)
        hint = f"nearest module names: {', '.join(near)}" if near else f"some names: {names[:8]}"
        raise HookPointError(
            f"no module {self.module!r} in {type(model).__name__}; {hint} "
            "(list them all with `monosemantic info MODEL`)"
        )


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"hooked value is a {type(value).__name__}, not a tensor or tuple of tensors")


def _replace_first(value: Any, new: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return new
    return type(value)([new, *value[1:]])


def _input_of(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """The module's main input and a function that rebuilds (args, kwargs) around a new one."""
    if args:
        return _first_tensor(args), lambda new: ((_replace_first(args, new)), kwargs)
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            return value, lambda new, key=key: (args, {**kwargs, key: new})
    raise TypeError("module was called with no tensor input")


def _register(
    model: nn.Module, point: HookPoint, fn: Callable[[torch.Tensor], torch.Tensor | None]
) -> torch.utils.hooks.RemovableHandle:
    """Call ``fn`` on the tensor at ``point``; a returned tensor replaces it."""
    module = point.resolve(model)
    if point.side == "output":

        def on_output(_m: nn.Module, _args: Any, output: Any) -> Any:
            new = fn(_first_tensor(output))
            return None if new is None else _replace_first(output, new)

        return module.register_forward_hook(on_output)

    def on_input(_m: nn.Module, args: tuple, kwargs: dict) -> Any:
        tensor, rebuild = _input_of(args, kwargs)
        new = fn(tensor)
        return None if new is None else rebuild(new)

    return module.register_forward_pre_hook(on_input, with_kwargs=True)


@contextmanager
def hooked(
    model: nn.Module, fns: dict[str | HookPoint, Callable[[torch.Tensor], torch.Tensor | None]]
) -> Iterator[None]:
    """Install several hook functions at once and remove them all on exit."""
    handles = []
    try:
        for spec, fn in fns.items():
            handles.append(_register(model, HookPoint.parse(spec), fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(
    model: nn.Module, points: Sequence[str | HookPoint] | str | HookPoint
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the tensors at ``points`` during forward passes inside the block.

    Yields a dict ``{str(point): tensor}`` filled by the forward pass (the latest call wins).
    Tensors keep their graph; detach them if you only read.
    """
    if isinstance(points, (str, HookPoint)):
        points = [points]
    parsed = [HookPoint.parse(p) for p in points]
    store: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[[torch.Tensor], None]:
        def record(t: torch.Tensor) -> None:
            store[name] = t

        return record

    with hooked(model, {p: recorder(str(p)) for p in parsed}):
        yield store


@contextmanager
def patch(
    model: nn.Module,
    point: str | HookPoint,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[None]:
    """Replace the tensor at ``point`` by ``fn(tensor)`` (same shape) during the block."""
    parsed = HookPoint.parse(point)

    def replace(t: torch.Tensor) -> torch.Tensor:
        new = fn(t)
        if new.shape != t.shape:
            raise ValueError(
                f"patch at {parsed} returned shape {tuple(new.shape)}, expected {tuple(t.shape)}"
            )
        return new

    with hooked(model, {parsed: replace}):
        yield


LAYERS = "*"
"""In a hook point, stands for every layer index: ``model.layers.*:output`` is the residual
stream after every layer (a multi-layer SAE's input)."""


def is_layer_pattern(spec: str) -> bool:
    return LAYERS in spec


def layer_points(pattern: str, points: Iterable[str]) -> list[str]:
    """The points among ``points`` that ``pattern`` names (``*`` = a layer index), in layer
    order: ``model.layers.*:output`` -> ``model.layers.0:output``, ``model.layers.1:output``..."""
    regex = re.compile("^" + re.escape(pattern).replace(re.escape(LAYERS), r"(\d+)") + "$")
    found = [(int(m.group(1)), p) for p in points if (m := regex.match(p))]
    return [p for _, p in sorted(found)]


def expand_layers(model: nn.Module, pattern: str) -> list[str]:
    """Every hook point of ``model`` that ``pattern`` names, in layer order; an error if none."""
    point = HookPoint.parse(pattern)
    modules = [f"{name}:{point.side}" for name, _ in model.named_modules()]
    found = layer_points(str(point), modules)
    if not found:
        raise HookPointError(
            f"{pattern} names no module of {type(model).__name__}: '*' stands for a layer "
            "index, e.g. model.layers.*:output (list the modules with `monosemantic info MODEL`)"
        )
    return found


class _Stop(Exception):
    """Raised inside a forward pass once every requested activation is in hand."""


def run_until(
    model: nn.Module, points: Sequence[str | HookPoint], *args: Any, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Run ``model(*args, **kwargs)`` only until every point has fired (truncation).

    Layers after the deepest hook point are never run, which is what makes harvesting early
    layers of a deep model cheap. Returns ``{str(point): tensor}``.
    """
    parsed = [HookPoint.parse(p) for p in points]
    store: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[[torch.Tensor], None]:
        def record(t: torch.Tensor) -> None:
            store[name] = t
            if len(store) == len(parsed):
                raise _Stop

        return record

    with hooked(model, {p: recorder(str(p)) for p in parsed}), suppress(_Stop):
        model(*args, **kwargs)
    missing = [str(p) for p in parsed if str(p) not in store]
    if missing:
        raise HookPointError(f"hook points never ran during the forward pass: {missing}")
    return store
