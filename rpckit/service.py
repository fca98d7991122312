"""Services and their method tables: what every transport serves.

Generated ``*_rpckit.py`` modules declare one ``ServiceSpec`` per proto service and an
abstract ``Service`` subclass; transports read the spec and call the bound handlers.
"""

from __future__ import annotations

import abc
import difflib
import enum
import functools
import hashlib
import inspect
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from google.protobuf.message import Message

from rpckit.durable.options import Durability, durability_of

__all__ = [
    "PROTO_ROOT",
    "HttpRule",
    "Idempotency",
    "MethodKind",
    "MethodSpec",
    "ServerStream",
    "Service",
    "ServiceSpec",
    "generated_base",
    "proto_digest",
    "resolve_stream",
    "stale_source",
    "unimplemented_class",
    "unmatched_handlers",
]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type
T = TypeVar("T")

#: What a server-streaming or bidi handler may return: an async iterable (an ``async def``
#: generator, a ``Streaming``, ``TextStream``, ``ByteStream``, ``FileStream``) or an
#: awaitable of one (an ``async def`` that returns a stream).
ServerStream = AsyncIterable[T] | Awaitable[AsyncIterable[T]]


class MethodKind(enum.Enum):
    """The four RPC shapes."""

    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"
    BIDI_STREAM = "bidi_stream"

    # Cached on each member: every call asks, so after the first time it is an attribute.
    @functools.cached_property
    def client_streams(self) -> bool:
        return self is MethodKind.CLIENT_STREAM or self is MethodKind.BIDI_STREAM

    @functools.cached_property
    def server_streams(self) -> bool:
        return self is MethodKind.SERVER_STREAM or self is MethodKind.BIDI_STREAM


class Idempotency(enum.Enum):
    """The proto ``idempotency_level`` option."""

    UNKNOWN = "unknown"
    NO_SIDE_EFFECTS = "no_side_effects"
    IDEMPOTENT = "idempotent"


@dataclass(frozen=True, slots=True)
class HttpRule:
    """One ``google.api.http`` binding: verb, path template and which field is the body."""

    method: str
    path: str
    body: str = ""
    response_body: str = ""


@dataclass(frozen=True, slots=True)
class MethodSpec(Generic[I, O]):
    """Everything a transport needs to serve or call one RPC."""

    service: str
    name: str
    handler: str
    kind: MethodKind
    input: type[I]
    output: type[O]
    idempotency: Idempotency = Idempotency.UNKNOWN
    http: tuple[HttpRule, ...] = ()
    #: Set when the handler is marked ``@durable`` (``Service.bind`` copies it here).
    durable: Durability | None = None

    @property
    def path(self) -> str:
        """The gRPC and Connect path, ``/<package>.<Service>/<Method>``."""
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A proto service: its full name and its methods, in declaration order."""

    name: str
    methods: tuple[MethodSpec[Any, Any], ...]
    by_name: dict[str, MethodSpec[Any, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {m.name: m for m in self.methods})


Handler = Callable[..., Any]


class Service(abc.ABC):
    """Base of every generated service class; subclass the generated one, not this."""

    __rpckit_spec__: ClassVar[ServiceSpec]

    @classmethod
    def spec(cls) -> ServiceSpec:
        """The method table of the generated service this class implements."""
        try:
            return cls.__rpckit_spec__
        except AttributeError:
            raise TypeError(f"{cls.__name__} is not a generated rpckit service") from None

    def bind(self) -> list[tuple[MethodSpec[Any, Any], Handler]]:
        """Each method of the spec with this instance's handler for it.

        TypeError (one line, naming the handler) for a handler of the wrong shape (a plain
        ``def`` or sync generator, see ``_check_shape``): it would only fail later, on every
        call.
        """
        bound = []
        for method in self.spec().methods:
            handler = getattr(self, method.handler)
            _check_shape(type(self), method, handler)
            settings = durability_of(handler)
            if settings is not None:
                if method.kind is not MethodKind.SERVER_STREAM:
                    raise TypeError(
                        f"{type(self).__qualname__}.{method.handler}: only a server-streaming"
                        f" method can be @durable ({method.path} is {method.kind.value})"
                    )
                method = replace(method, durable=settings)
            bound.append((method, handler))
        return bound


def _check_shape(cls: type, method: MethodSpec[Any, Any], handler: Handler) -> None:
    """TypeError (one line) for a handler whose shape would fail every call: a plain ``def``
    for a unary or client-streaming method, a plain (sync) generator for a stream, an
    ``async`` generator where one response is due, or parameters that cannot take
    ``(request, ctx)``. Callable objects and wrappers are left alone where unsure."""
    where = f"{cls.__name__}.{method.handler} ({method.path})"
    function = inspect.unwrap(getattr(handler, "__func__", handler))
    if inspect.isfunction(function):
        if inspect.isgeneratorfunction(function):
            raise TypeError(
                f"{where} is a plain generator (def with yield): "
                "use async def, so that it can yield without blocking the server"
            )
        if not method.kind.server_streams:
            if inspect.isasyncgenfunction(function):
                raise TypeError(
                    f"{where} is an async generator, but {method.name} answers one "
                    "message: return it instead of yielding"
                )
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"{where} must be an async def, not a plain def")
    try:  # the handler as called, a decorator's wrapper included
        signature = inspect.signature(handler, follow_wrapped=False)
    except (TypeError, ValueError):
        return  # a callable whose parameters Python cannot tell
    try:
        signature.bind(None, None)
    except TypeError:
        first = "requests" if method.kind.client_streams else "request"
        shown = str(signature).split(" -> ")[0]
        raise TypeError(f"{where} takes {shown}; handlers are called with ({first}, ctx)") from None


def generated_base(cls: type[Service]) -> type[Service]:
    """The generated service base ``cls`` implements: the first class that sets the spec."""
    for klass in cls.__mro__:
        if "__rpckit_spec__" in vars(klass):
            found: type[Service] = klass
            return found
    raise TypeError(f"{cls.__name__} is not a generated rpckit service")


def unimplemented_class(cls: type[Service]) -> type[Service] | None:
    """The generated ``Unimplemented*`` class of ``cls``'s service (its name may differ from
    ``Unimplemented`` + the user's class name: ``UnimplementedGreeterService``), if any."""
    base = generated_base(cls)
    module = sys.modules.get(base.__module__)
    for value in vars(module).values() if module is not None else ():
        if (
            isinstance(value, type)
            and issubclass(value, base)
            and value is not base
            and value.__module__ == base.__module__
            and value.__name__.startswith("Unimplemented")
            and not inspect.isabstract(value)
        ):
            found: type[Service] = value
            return found
    return None


def _looks_like_handler(value: object) -> bool:
    """An ``async def`` (or async generator) taking exactly ``(self, request, ctx)``."""
    function = inspect.unwrap(value) if callable(value) else value
    if not (inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)):
        return False
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return len(parameters) == 3 and all(p.kind in positional for p in parameters)


#: How close (difflib's ratio) a method name must be to a handler's to be taken for a typo:
#: ``gret``/``greet`` 0.89, ``lst_files``/``list_files`` 0.95; ``greet_user``/``greet`` 0.67.
_TYPO_CUTOFF = 0.8


def unmatched_handlers(cls: type[Service]) -> list[str]:
    """One line per likely typo'd handler of ``cls``: a public method shaped like a handler
    (``async def name(self, request, ctx)``), defined on the user's own classes, named after
    no RPC, whose closest handler name (difflib, a ratio of 0.8 or more: a letter or two
    off) belongs to an RPC those classes do not implement.

    Helpers cannot be reported: private names, plain ``def``, other parameter lists, and
    names close only to handlers the class implements are left alone.
    """
    base = generated_base(cls)
    spec = base.spec()
    handlers = {method.handler for method in spec.methods}
    own = [k for k in cls.__mro__ if issubclass(k, base) and k.__module__ != base.__module__]
    defined = {name for klass in own for name in vars(klass)}
    missing = handlers - defined
    lines = []
    seen: set[str] = set()
    for klass in own:
        for name, value in vars(klass).items():
            if name.startswith("_") or name in handlers or name in seen:
                continue
            seen.add(name)
            if not _looks_like_handler(value):
                continue
            # closest of all handlers, so that a helper named after one it implements is not
            # taken for a typo of another
            close = difflib.get_close_matches(name, handlers, n=1, cutoff=_TYPO_CUTOFF)
            if close and close[0] in missing:
                lines.append(
                    f"{klass.__name__}.{name} matches no RPC of {spec.name}; "
                    f"did you mean {close[0]}?"
                )
    return lines


#: Where ``rpckit serve`` looks for the ``.proto`` of a generated module, under its current
#: directory: the default include path of ``rpckit generate`` and of ``--reload``.
PROTO_ROOT = "protos"


def proto_digest(data: bytes) -> str:
    """The digest a generated module records of its ``.proto`` file's content."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _shown(path: Path) -> str:
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def stale_source(cls: type[Service]) -> str | None:
    """Why the generated module of ``cls`` is out of date, or None.

    It is when it records its ``.proto`` (``__rpckit_source__``: name and digest, written by
    ``rpckit generate``) and ``protos/<name>`` under the current directory holds other
    content. A module that records nothing (the protoc plugin's, older ones), or whose
    ``.proto`` is not there (an installed package, another layout), is taken as it is.
    """
    module = sys.modules.get(generated_base(cls).__module__)
    source = getattr(module, "__rpckit_source__", None)
    file = getattr(module, "__file__", None)
    if not (isinstance(source, tuple) and len(source) == 2 and isinstance(file, str)):
        return None
    name, digest = source
    proto = Path.cwd() / PROTO_ROOT / name
    try:
        data = proto.read_bytes()
    except OSError:
        return None
    if proto_digest(data) == digest:
        return None
    return f"{_shown(Path(file))} was generated from an older {_shown(proto)}; run rpckit generate"


async def resolve_stream(result: ServerStream[T]) -> AsyncIterator[T]:
    """The async iterator a streaming handler's return value stands for."""
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, AsyncIterable):
        raise TypeError(
            f"a streaming handler must return an async iterable, not {type(result).__name__}"
        )
    return aiter(result)
