"""The action catalogue: every action a command may carry, with its payload and result schemas."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request
from litestar.params import Parameter

from core.base.errors import NotFound
from core.commands.catalogue import catalogue_for
from nexmdm_api.auth import admin_route
from nexmdm_api.errors import problems
from nexmdm_api.routes.base import get
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_actions import ACTION_NAME_PATTERN, ActionList, ActionOut

ActionNamePath = Annotated[
    str, Parameter(description="the action's name", schema_extra={"pattern": ACTION_NAME_PATTERN})
]


class ActionController(Controller):
    """The catalogue: list every action, or one."""

    path = "/v1/actions"
    tags = ["admin"]

    @get(
        "/",
        summary="List the action catalogue",
        description=(
            "Every action a command may carry: the built-in ones, then the operator's own (`NEXMDM_ACTIONS`), each "
            "with its payload and result schema (JSON Schema 2020-12), whether it is destructive, and the least role "
            "that may send it. One page: `next_cursor` is always null."
        ),
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_actions(self, request: Request[Any, Any, Any]) -> ActionList:
        catalogue = catalogue_for(request.app.state.settings)
        return ActionList(items=[convert(a.public(), ActionOut) for a in catalogue.actions.values()])

    @get(
        "/{name:str}",
        summary="One action of the catalogue",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 429),
    )
    def get_action(self, request: Request[Any, Any, Any], name: ActionNamePath) -> ActionOut:
        action = catalogue_for(request.app.state.settings).actions.get(name)
        if action is None:
            raise NotFound(f"no action {name!r} in the catalogue")
        return convert(action.public(), ActionOut)
