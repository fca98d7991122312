"""What ``rpckit serve`` loads by name: ``MODULE:ATTR`` targets (the services, and the
``--interceptor``s through the same importer), and the start-up checks of the services."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpckit.service import Service

__all__ = ["import_target", "load_services", "target_module"]

log = logging.getLogger("rpckit")


def import_target(target: str, flag: str = "") -> Any:
    """The object ``MODULE:ATTR`` names (``MODULE`` may be a file under the current
    directory); ``SystemExit`` with one line when it cannot be found. ``flag`` names the
    option the target came from, for the message."""
    where = f"{flag} " if flag else ""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"rpckit: {where}expects MODULE:ATTR, got {target!r}")
    try:
        module_name = target_module(module_name, Path.cwd())
    except ValueError as exc:
        raise SystemExit(f"rpckit: {where}{exc}") from None
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SystemExit(f"rpckit: {where}{_not_found(exc, module_name, target)}") from None
    # Any other error inside the user's module keeps its traceback: it shows where.
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"rpckit: {where}{module_name} has no attribute {attr!r}") from None


def load_services(target: str, argv: Sequence[str] = ()) -> list[Service]:
    """Import ``MODULE:ATTR``: a Service, a list of them, or a factory given the extra args."""
    obj = import_target(target)
    if isinstance(obj, type) and issubclass(obj, Service):
        if inspect.isabstract(obj):
            from rpckit.service import unimplemented_class, unmatched_handlers

            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            hint = "implement them"
            fallback = unimplemented_class(obj)
            if fallback is not None:
                hint += f", or subclass {fallback.__name__} to answer them with unimplemented"
            lines = [*unmatched_handlers(obj), f"{target} does not implement {missing}; {hint}"]
            raise SystemExit("\n".join(f"rpckit: {line}" for line in lines))
        obj = obj()
    elif callable(obj) and not isinstance(obj, Service):
        try:
            parameters = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            parameters = None
        if parameters is not None and not parameters:
            if argv:
                raise SystemExit(f"rpckit: unrecognised arguments: {' '.join(argv)}")
            obj = obj()  # a factory without parameters takes no arguments
        else:
            obj = obj(list(argv))
    elif argv:
        raise SystemExit(f"rpckit: unrecognised arguments: {' '.join(argv)}")
    services = obj if isinstance(obj, list | tuple) else [obj]
    for service in services:
        if not isinstance(service, Service):
            raise SystemExit(f"rpckit: {target} gave {type(service).__name__}, not a Service")
    _check_services(services)
    return list(services)


def target_module(text: str, cwd: Path) -> str:
    """The module of a target's ``MODULE`` part, which may also be a file under ``cwd``
    (``greeter.py``, ``./app/service.py``, ``./greeter``); ValueError with a hint otherwise."""
    if "/" not in text and not text.endswith(".py"):
        return text  # a module name
    path = Path(text)
    if path.is_absolute() and path.is_relative_to(cwd):
        path = path.relative_to(cwd)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{text} is not under the current directory; serve from its project")
    module_path = path.with_suffix("") if path.suffix == ".py" else path
    parts = [part for part in module_path.parts if part != "."]
    if not parts or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{text} is not a module path; give MODULE:ATTR, e.g. greeter:Greeter")
    module_file = cwd.joinpath(*parts[:-1], parts[-1] + ".py")
    if not module_file.is_file() and not cwd.joinpath(*parts, "__init__.py").is_file():
        raise ValueError(f"no file {text} under {cwd}")
    return ".".join(parts)


def _not_found(exc: ModuleNotFoundError, module_name: str, target: str) -> str:
    """One line for a module that is not found: the target's own, or one it imports."""
    missing = exc.name or "?"
    if missing == module_name or module_name.startswith(missing + "."):
        return f"no module named {module_name!r} (from {target})"
    importer = module_name
    trace = exc.__traceback__
    while trace is not None:  # the innermost frame outside importlib did the import
        if not trace.tb_frame.f_code.co_filename.startswith("<frozen"):
            importer = trace.tb_frame.f_globals.get("__name__", importer)
        trace = trace.tb_next
    text = f"{importer} imports {missing}, which is not found"
    if (Path("protos") / missing.partition(".")[0]).is_dir():
        return f"{text}; did you run rpckit generate?"
    return text


def _check_services(services: Sequence[Service]) -> None:
    """Handler shapes and ``google.api.http`` rules, checked before anything binds a port."""
    from rpckit.http.rest.routes import validate_rules
    from rpckit.service import stale_source, unmatched_handlers

    for kind in dict.fromkeys(type(service) for service in services):
        stale = stale_source(kind)  # old code would serve old routes: 404s, then internal
        if stale is not None:
            raise SystemExit(f"rpckit: {stale}")
        for line in unmatched_handlers(kind):  # it starts: the RPC answers unimplemented
            log.warning("%s", line)
    try:
        for service in services:
            service.bind()
        validate_rules(method for service in services for method in service.spec().methods)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"rpckit: {exc}") from None
