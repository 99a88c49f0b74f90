"""What the OpenAPI document needs beyond Litestar's defaults, and the request checks that keep it true.

Schemathesis (``tests/reliability/test_schemathesis.py``) holds the server to its document in both
directions: every request the document allows must be accepted, every one it forbids refused. So:

* the ``action`` of a command lists the catalogue's actions (``ActionsSchemaPlugin``), and a command's
  ``payload`` and an ack's ``result`` are one of the actions' JSON Schemas, each titled with its action
  (``action_schemas``, ``ActionSchemasPlugin``);
* identifiers in paths carry their patterns (``DeviceIdPath``, ``RequestIdPath``);
* admin bodies say ``additionalProperties: false`` (``ClosedStructSchemaPlugin``), as the server refuses them;
* ``/metrics`` says it answers Prometheus text, not JSON (``MetricsController``);
* a JSON body is decoded strictly before Litestar's lax conversion would turn ``0`` into ``false`` or
  ``"5"`` into ``5`` (``check_json_types``): the document says boolean and integer, so does the server.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, cast

import anyio
import msgspec
from litestar import Request, Response, get, route
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin  # Litestar's own, extended
from litestar.constants import RESERVED_KWARGS
from litestar.enums import HttpMethod
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import HeaderParameter, Parameter
from litestar.plugins import OpenAPISchemaPlugin
from litestar.plugins.prometheus import PrometheusController
from litestar.typing import FieldDefinition
from prometheus_client import CONTENT_TYPE_LATEST

from core.commands.catalogue import Catalogue
from nexmdm_api.schemas import (
    DEVICE_ID_PATTERN,
    PAYLOAD_VALUE_REF,
    REQUEST_ID_PATTERN,
    TEXT_PATTERN,
    ActionPayloads,
    ActionResults,
    ConfiguredActions,
)

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
    """Documents a field marked with ``ConfiguredActions`` as an enum of the catalogue's actions."""

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
            description="an action of the catalogue (`GET /v1/actions`): a built-in one or one of `NEXMDM_ACTIONS`",
        )


def action_schemas(catalogue: Catalogue, kind: str) -> list[dict[str, Any]]:
    """Every action's payload (or result) schema, titled ``"lock payload"``: JSON Schema 2020-12 is OpenAPI
    3.1's own dialect, so they go in the document as they are (Litestar serializes a dict as it is)."""
    out = []
    for action in catalogue.actions.values():
        schema = action.payload_schema if kind == "payload" else action.result_schema
        out.append({k: v for k, v in schema.items() if k != "$schema"} | {"title": f"{action.name} {kind}"})
    return out


class ActionSchemasPlugin(OpenAPISchemaPlugin):
    """Documents a command's ``payload`` and an ack's ``result`` as one of the actions' schemas."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.schemas = {kind: action_schemas(catalogue, kind) for kind in ("payload", "result")}

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return False

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.has_metadata(ActionPayloads) or field_definition.has_metadata(ActionResults)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        kind = "payload" if field_definition.has_metadata(ActionPayloads) else "result"
        return Schema(
            any_of=cast("list[Any]", self.schemas[kind]),
            description=f"the {kind} schema of the command's action, titled with its name (`GET /v1/actions`)",
        )


class PayloadValue:
    """The component ``PayloadValue`` (a name for Litestar's schema registry; never instantiated)."""


#: the values of a command's payload, at any depth (``schemas.Payload``): JSON whose strings, keys included,
#: hold no control characters (``core.base.validation.payload``)
_PAYLOAD_VALUE = Reference(ref=PAYLOAD_VALUE_REF)
PAYLOAD_VALUE = Schema(
    # no ``type``: each keyword applies to the values of its kind (JSON Schema), so a client generator reads it
    # as any JSON value while a validator holds strings, keys and nested values to the rule
    pattern=TEXT_PATTERN,
    items=_PAYLOAD_VALUE,
    property_names=Schema(pattern=TEXT_PATTERN),
    additional_properties=_PAYLOAD_VALUE,
    title="PayloadValue",
    description="a JSON value whose strings (and keys), at any depth, hold no control characters",
)


def _payload_value(registry: Any) -> Reference:
    """The ``PayloadValue`` component, registered on first use (Litestar's registry makes the components)."""
    field = FieldDefinition.from_annotation(PayloadValue)
    schema = registry.get_schema_for_field_definition(field)
    if schema.any_of is None:
        for item in dataclasses.fields(Schema):
            setattr(schema, item.name, getattr(PAYLOAD_VALUE, item.name))
    return cast("Reference", registry.get_reference_for_field_definition(field))


def _action_marker(annotation: Any) -> ActionPayloads | ActionResults | None:
    """The payload/result marker of a field's annotation, inside an optional one too."""
    for arg in (annotation, *typing.get_args(annotation)):
        for meta in getattr(arg, "__metadata__", ()):
            if isinstance(meta, ActionPayloads | ActionResults):
                return meta
    return None


def _nested_structs(kind: Any, found: dict[str, type[msgspec.Struct]]) -> dict[str, type[msgspec.Struct]]:
    """The struct types inside ``kind`` (a ``msgspec.inspect`` type), by name."""
    if isinstance(kind, msgspec.inspect.StructType):
        if kind.cls.__name__ in found:
            return found
        found[kind.cls.__name__] = kind.cls
        for field in kind.fields:
            _nested_structs(field.type, found)
    for inner in ("type", "item_type", "key_type", "value_type"):
        if hasattr(kind, inner):
            _nested_structs(getattr(kind, inner), found)
    for inner in getattr(kind, "types", ()):
        _nested_structs(inner, found)
    return found


def _from_json_schema(value: Any, reference: Callable[[str], Any]) -> Any:
    """A JSON Schema (a dict, as msgspec writes it) as Litestar's ``Schema``; ``reference`` resolves a ``$ref``."""
    if isinstance(value, list):
        return [_from_json_schema(v, reference) for v in value]
    if not isinstance(value, dict):
        return value
    if "$ref" in value:
        return reference(value["$ref"])
    aliases = Schema().field_aliases()
    fields: dict[str, Any] = {aliases.get(str(k), str(k)): v for k, v in value.items()}
    if isinstance(fields.get("type"), str):
        fields["type"] = OpenAPIType(fields["type"])
    if "properties" in fields:
        fields["properties"] = {k: _from_json_schema(v, reference) for k, v in fields["properties"].items()}
    for key in ("items", "additional_properties", "property_names", "any_of", "one_of"):
        if key in fields:
            fields[key] = _from_json_schema(fields[key], reference)
    return Schema(**fields)


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Documents a request body that forbids unknown fields (the admin bodies) with msgspec's own JSON Schema.

    msgspec validates the body, so its schema says exactly what it checks: ``additionalProperties: false``,
    the patterns and lengths of dictionary keys (``propertyNames``) and values, the items of a list, and bounds
    of 0 (Litestar's own conversion leaves those out: it tests a bound's truth). A struct whose fields come in
    alternatives (exactly one of two) names the shapes in its ``openapi_variants`` class variable: the document
    says ``oneOf`` them, a generated client gets one model per shape. A field that needs another (msgspec cannot
    say it) is named in ``openapi_dependent_required`` (JSON Schema's ``dependentRequired``). A field marked
    with ``ConfiguredActions`` stays Litestar's (``ActionsSchemaPlugin``).
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return super().is_plugin_supported_field(field_definition) and bool(
            field_definition.type_.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        struct = field_definition.type_
        schema: Schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        variants = getattr(struct, "openapi_variants", ())
        if variants:  # exactly one of these shapes
            schema.type = OpenAPIType.OBJECT
            schema.title = struct.__name__
            schema.description = inspect.cleandoc(struct.__doc__ or "") or None
            schema.one_of = [schema_creator.for_field_definition(FieldDefinition.from_annotation(v)) for v in variants]
            return schema
        (ref,), components = msgspec.json.schema_components([struct], ref_template="{name}")
        nested = _nested_structs(msgspec.inspect.type_info(struct), {})

        def reference(name: str) -> Any:
            if name == PAYLOAD_VALUE_REF:
                return _payload_value(schema_creator.schema_registry)
            return schema_creator.for_field_definition(FieldDefinition.from_annotation(nested[name]))

        built: Schema = _from_json_schema(components[ref["$ref"]], reference)
        hints = field_definition.get_type_hints(include_extras=True)
        for name, annotation in hints.items():
            hint = FieldDefinition.from_annotation(annotation)
            if hint.has_metadata(ConfiguredActions):
                built.properties = {**(built.properties or {}), name: schema_creator.for_field_definition(hint)}
            marker = _action_marker(annotation)
            if marker is not None and built.properties and name in built.properties:
                # msgspec's own rule for the values, and one of the actions' schemas (or null when optional)
                actions = schema_creator.for_field_definition(
                    FieldDefinition.from_annotation(Annotated[dict[str, Any], marker])
                )
                own = built.properties[name]
                either = [actions, Schema(type=OpenAPIType.NULL)] if hint.is_optional else [actions]
                built.properties[name] = Schema(all_of=[own], any_of=either, description=actions.description)
        for item in dataclasses.fields(Schema):
            setattr(schema, item.name, getattr(built, item.name))
        needs = getattr(struct, "openapi_dependent_required", None)
        if needs:
            schema.dependent_required = needs
            # the same rule for a generator that ignores dependentRequired, with null read as absent (as the
            # server reads it): not (FIELD given, not null, while one it needs is absent or null)
            null = Schema(type=OpenAPIType.NULL)
            schema.schema_not = Schema(
                any_of=[
                    Schema(
                        required=[field],
                        properties={field: Schema(schema_not=null)},
                        any_of=[Schema(schema_not=Schema(required=[other])) for other in others]
                        + [Schema(properties={other: null}) for other in others],
                    )
                    for field, others in needs.items()
                ]
            )
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
