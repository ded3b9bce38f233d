"""Unknown query parameters are refused, as unknown body fields are: `?status=failed` on a route that
cannot filter by status must not quietly answer with everything."""

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def _query_parameters(dependant: Dependant) -> set[str]:
    names = {parameter.alias for parameter in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_parameters(dependency)
    return names


_declared: dict[int, frozenset[str]] = {}  # by id(route): routes live as long as the app


def declared_query_parameters(route: APIRoute) -> frozenset[str]:
    """The names (aliases) of the query parameters the route and its dependencies declare."""
    if id(route) not in _declared:
        _declared[id(route)] = frozenset(_query_parameters(route.dependant))
    return _declared[id(route)]


async def refuse_unknown_query_parameters(request: Request) -> None:
    """An app-wide dependency: 422 naming each query parameter the route does not take."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return  # the dashboard page and the docs take whatever a browser adds
    allowed = declared_query_parameters(route)
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        takes = f"this endpoint takes {', '.join(sorted(allowed))}" if allowed else "this endpoint takes none"
        raise RequestValidationError(
            [
                {"type": "unknown_query_parameter", "loc": ("query", name), "msg": f"unknown query parameter; {takes}"}
                for name in unknown
            ]
        )
