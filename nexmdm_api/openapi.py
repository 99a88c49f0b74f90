"""What the OpenAPI document needs beyond Litestar's defaults, and the request checks that keep it true.

Schemathesis (``tests/reliability/test_schemathesis.py``) holds the server to its document in both
directions: every request the document allows must be accepted, every one it forbids refused. So:

* the ``action`` of a command lists the *configured* actions (``ActionsSchemaPlugin``);
* identifiers in paths carry their patterns (``DeviceIdPath``, ``RequestIdPath``);
* admin bodies say ``additionalProperties: false`` (``ClosedStructSchemaPlugin``), as the server refuses them;
* ``/metrics`` says it answers Prometheus text, not JSON (``MetricsController``);
* a JSON body is decoded strictly before Litestar's lax conversion would turn ``0`` into ``false`` or
  ``"5"`` into ``5`` (``check_json_types``): the document says boolean and integer, so does the server.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import anyio
import msgspec
from litestar import Request, Response, get, route
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin  # Litestar's own, extended
from litestar.constants import RESERVED_KWARGS
from litestar.enums import HttpMethod
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import HeaderParameter, Parameter
from litestar.plugins import OpenAPISchemaPlugin
from litestar.plugins.prometheus import PrometheusController
from litestar.typing import FieldDefinition
from prometheus_client import CONTENT_TYPE_LATEST

from nexmdm_api.schemas import DEVICE_ID_PATTERN, REQUEST_ID_PATTERN, ConfiguredActions

#: identifiers in a path: documented, so that generated requests use them, but checked by the handlers,
#: which answer 422 for a malformed device id and 400 for a malformed request id (contract: "Identifiers
#: and values"), not Litestar's validation error
DeviceIdPath = Annotated[str, Parameter(description="the device's id", schema_extra={"pattern": DEVICE_ID_PATTERN})]
RequestIdPath = Annotated[
    str, Parameter(description="the dispatch's request id", schema_extra={"pattern": REQUEST_ID_PATTERN})
]

IDEMPOTENCY_KEY_PATTERN = r'^([A-Za-z0-9._~:-]{1,255}|"[A-Za-z0-9._~:-]{1,255}")$'
IDEMPOTENCY_KEY_DOC = (
    "1-255 characters from A-Z a-z 0-9 . _ ~ : - (a structured-header string in double quotes is accepted "
    "too). It becomes the command's request_id; one key names one dispatch, globally."
)
#: the ``Idempotency-Key`` header of the routes that create (a command, a campaign): required in the
#: document, but a missing or malformed key is checked by the handler (``routes.commands.idempotency_key``:
#: a 400 with its own code), not by Litestar
IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=True,
        description=IDEMPOTENCY_KEY_DOC,
        schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
    ),
]


class ActionsSchemaPlugin(OpenAPISchemaPlugin):
    """Documents a field marked with ``ConfiguredActions`` as an enum of the configured actions."""

    def __init__(self, actions: tuple[str, ...]) -> None:
        self.actions = list(actions)

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return False

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.has_metadata(ConfiguredActions)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        return Schema(
            type=OpenAPIType.STRING,
            enum=self.actions,
            description="one of the configured actions (`NEXMDM_ACTIONS`)",
        )


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Documents a struct that forbids unknown fields (the admin bodies) with ``additionalProperties: false``."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return super().is_plugin_supported_field(field_definition) and bool(
            field_definition.type_.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema


#: reads of the workers' sample files before a scrape gives up (a 500), this long apart
SCRAPE_ATTEMPTS = 3
SCRAPE_PAUSE_SECONDS = 0.05


async def _settle() -> None:
    """The pause between two reads: time for a worker to finish writing its sample file."""
    await anyio.sleep(SCRAPE_PAUSE_SECONDS)


async def _scrape(controller: PrometheusController) -> Response[Any]:
    """Litestar's own ``/metrics`` handler, called as a function (its handler object is typed loosely)."""
    return cast("Response[Any]", await PrometheusController.get.fn(controller))


class MetricsController(PrometheusController):
    """Litestar's Prometheus endpoint, documented with the media type it answers."""

    @get(media_type=CONTENT_TYPE_LATEST, tags=["health"], summary="Prometheus metrics", include_in_schema=True)
    async def get(self) -> Response[Any]:
        # With several workers, prometheus_client reads every worker's sample file; one that a worker is
        # creating at that moment can be read half-written (prometheus/client_python#604): read again.
        for _ in range(SCRAPE_ATTEMPTS - 1):
            try:
                return await _scrape(self)
            except Exception:  # noqa: BLE001 - whatever the half-written file raised: read again
                await _settle()
        return await _scrape(self)


def _whole_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_floats_as_ints(v) for v in value]
    return value


def check_json_types(request: Request[Any, Any, Any], body: bytes) -> None:
    """Decode ``body`` strictly into the handler's ``data`` type; a type mismatch is 422 like any validation error.

    Syntax errors are left to Litestar (400); unknown fields follow the struct (ignored or forbidden).
    """
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    try:
        try:
            msgspec.json.decode(body, type=data.annotation, strict=True)
        except msgspec.ValidationError as exc:
            if not str(exc).partition(" - at `$.")[0].endswith("got `float`"):
                raise
            # JSON Schema counts 6.0 as an integer (Litestar's conversion takes it and refuses 6.5): check
            # the rest of the body strictly with whole floats read as integers
            msgspec.convert(_whole_floats_as_ints(msgspec.json.decode(body)), type=data.annotation, strict=True)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        if message.endswith("got `float`"):
            return  # 6.5 where an integer belongs: Litestar's own decoding refuses it with its message

        field = path.rstrip("`") or "body"
        raise ValidationException(
            detail=str(exc), extra=[{"key": field, "message": message, "source": "body"}]
        ) from None
    except msgspec.DecodeError:
        return


def check_query(request: Request[Any, Any, Any]) -> None:
    """Admin endpoints, and device endpoints that take query parameters (``closed_query``), refuse query
    parameters they do not declare (422), as the OpenAPI document says (a parameter list is closed)."""
    opt = request.route_handler.opt
    if opt.get("auth") != "admin" and not opt.get("closed_query"):
        return
    handler = request.route_handler
    declared = {
        # ``Parameter(query=...)`` (deprecated) or ``QueryParameter(name=...)`` may rename a query parameter
        (getattr(field.kwarg_definition, "query", None) or _query_name(field.kwarg_definition) or name)
        for name, field in handler.parsed_fn_signature.parameters.items()
        if name not in RESERVED_KWARGS
        and name not in request.path_params
        and name not in handler.resolve_dependencies()
        and not getattr(field.kwarg_definition, "header", None)
        and not getattr(field.kwarg_definition, "cookie", None)
    }
    unknown = sorted(name for name in request.query_params if name not in declared)
    if unknown:
        raise ValidationException(
            detail=f"unknown query parameter {unknown[0]!r}",
            extra=[{"key": name, "message": "unknown query parameter", "source": "query"} for name in unknown],
        )


def allow(path: str) -> HTTPRouteHandler:
    """The ``OPTIONS`` handler of a controller whose ``path`` is served by several handlers.

    Litestar builds a path's automatic ``OPTIONS`` handler when the path's first handler is registered
    and never updates it, so ``Allow`` would list only that handler's methods (``OPTIONS, POST`` where
    ``GET`` is served too); nor does it update a route's handlers in place when another joins them
    (litestar-org/litestar#4169). This one reads the methods when asked. Declare it in the controller's
    body as ``allowed = allow(path)``: a controller registers its handlers in the order of their
    qualified names, and this one's (``nexmdm_api.openapi.allow...``) comes before any under ``routes``,
    so Litestar never adds its own.
    """

    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False, name=f"allow:{path}")
    def options(_controller: object, request: Request[Any, Any, Any]) -> Response[None]:
        methods = request.app.route_handler_method_map.get(path, {})
        return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})

    return options


def _query_name(definition: object) -> str | None:
    """The name a ``QueryParameter(name=...)`` gives its query parameter (None for anything else)."""
    from litestar.params import QueryParameter

    return definition.name if isinstance(definition, QueryParameter) else None
