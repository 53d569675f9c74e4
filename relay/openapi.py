"""The relay's OpenAPI 3.1 document, served at `/openapi.json`.

Built from the tables the relay checks requests with: the job fields (`relay.orders.FIELDS`,
its job parameters from the shared table `protocol.params`), the methods
(`protocol.params.METHODS`) and this relay's configured limits (epochs, size, upload bytes),
so the document and the checks cannot drift apart. A field added to `FIELDS` without a schema
here makes the document fail to build (and its test).
"""

from typing import Any

from aiohttp import web

from protocol.params import EPOCHS, METHODS, Kind, Param
from relay import orders, waiting
from relay.api import CONFIG
from relay.config import Config
from relay.model import JobState

Schema = dict[str, Any]
ERROR_STATUSES = {
    400: "The request is malformed or a value is out of range; the message names it.",
    403: "Sent by a page of another site (cross-site request).",
    404: "No such job, style, item or image.",
    405: "The method is not allowed on this path.",
    408: "The request body did not arrive in time.",
    401: "An unknown or revoked API key (sent as Authorization: Bearer KEY).",
    409: "The job is in a state that does not allow this.",
    413: "An image or the whole body is over the byte cap.",
    415: "A compressed request body.",
    429: "A per-client limit (rate, open jobs, uploads, storage, reports); may have Retry-After.",
    503: "The queue is full or the relay is busy; has Retry-After.",
    507: "The relay's disk is full or at its cap.",
}
READ_ERRORS = (400, 401, 404, 405, 408, 413, 415, 429, 503)
"""What any request may meet on its way in (intake, limits), besides its own errors; 405
too, as a path parameter outside its values can name another route's path
(`/api/gallery/x/report` is POST-only)."""
WRITE_ERRORS = (*READ_ERRORS, 403, 409, 507)
_TRUE_FALSE = ["", *sorted(orders._TRUE | orders._FALSE)]
"""Also the empty string: an empty yes/no field is left out, so off."""
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGUlEQVR4nGPkqjjBQApgIkn1qIZRDUNKAwAjmgFqjisAt"
    "wAAAABJRU5ErkJggg=="
)
"""A 16×16 PNG, for the request examples."""

NULL_STR: Schema = {"type": ["string", "null"]}
NULL_INT: Schema = {"type": ["integer", "null"]}


def _bool() -> Schema:
    return {"oneOf": [{"type": "boolean"}, {"type": "string", "enum": _TRUE_FALSE}]}


def param_schema(param: Param, config: Config) -> Schema:
    """The schema of one job parameter, from the shared table (`protocol.params`), with
    this relay's caps on `size` and `epochs`."""
    schema: Schema
    match param.kind:
        case Kind.BOOLEAN:
            schema = _bool()
        case Kind.CHOICE:
            schema = {"type": "string", "enum": list(param.choices)}
        case Kind.STRING:
            schema = {"type": "string"}
        case Kind.INTEGER | Kind.NUMBER:
            schema = {"type": param.kind.value}
            if param.low is not None:
                schema["exclusiveMinimum" if param.low_open else "minimum"] = param.low
            cap = {"size": config.max_size, "epochs": config.max_epochs}.get(param.name)
            high = param.high_for(None, cap)
            if high is not None:
                schema["maximum"] = high
    methods = ", ".join(param.methods)
    schema["description"] = f"{param.help} Methods: {methods}." + "".join(
        f" At most {high} for {method}." for method, high in param.highs
    )
    default = min(orders.DEFAULT_EPOCHS, config.max_epochs) if param is EPOCHS else param.default
    if param.name == "size":
        default = config.default_size
    if default is not None:
        schema["default"] = default
    return schema


def field_schema(name: str, config: Config) -> Schema:
    """The schema of one job field (a name in `orders.FIELDS`), with this relay's limits."""
    if name in orders.PARAMS:
        return param_schema(orders.PARAMS[name], config)
    match name:
        case "method":
            return {"type": "string", "enum": list(METHODS)}
        case "email":
            return {"type": "string", "maxLength": orders.MAX_EMAIL, "format": "email"}
        case "filename":
            return {"type": "string"}
        case "style_weights":
            return {
                "type": "array",
                "items": {"type": "number", "exclusiveMinimum": 0},
                "minItems": 1,
                "maxItems": orders.MAX_STYLES,
            }
        case "share" | "share_style":
            return _bool()
    raise KeyError(f"job field {name!r} has no schema in relay.openapi")


def job_json(config: Config, seeds: bool = False) -> Schema:
    """A JSON job request: the photo and style images as base64."""
    b64 = {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*"}
    style_item = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "weight": {"type": "number"}},
        "required": ["id"],
    }
    image_item = {
        "type": "object",
        "properties": {"image": b64, "weight": {"type": "number"}},
        "required": ["image"],
    }
    top = orders.MAX_STYLES
    props: Schema = {
        "image": {**b64, "description": "The photo (also accepted as `content`)."},
        "content": b64,
        "style": {
            "description": "A style id from /api/styles, a list of them, or {id, weight} items.",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": top},
                {"type": "array", "items": style_item, "maxItems": top},
            ],
        },
        "style_image": {
            "oneOf": [
                b64,
                {"type": "array", "items": b64, "maxItems": top},
                {"type": "array", "items": image_item, "maxItems": top},
            ]
        },
    }
    props |= {name: field_schema(name, config) for name in sorted(orders.FIELDS)}
    if seeds:
        props["model"] = {
            "type": "string",
            "maxLength": 100,
            "description": "The seeds' style name: a style id, a painting's key "
            "(`starry_night`) or a fast style's last name part (`candy`).",
        }
    return {"type": "object", "properties": props, "additionalProperties": False}


def job_form(config: Config, seeds: bool = False) -> Schema:
    """A multipart job request: the photo and style images as files, the rest as text."""
    binary = {"type": "string", "contentMediaType": "application/octet-stream"}
    props: Schema = {
        "content": {**binary, "description": "The photo (also accepted as `image`)."},
        "style": {"type": "string", "description": "Style ids, comma-separated."},
        "style_image": {"type": "array", "items": binary, "maxItems": orders.MAX_STYLES},
    }
    for name in sorted(orders.FIELDS):
        schema = field_schema(name, config)
        if name == "style_weights":
            schema = {"type": "string", "description": "Weights, comma-separated: 0.7,0.3"}
        props[name] = schema
    if seeds:
        props["model"] = {"type": "string", "maxLength": 100}
    return {"type": "object", "properties": props}


def job_view() -> Schema:
    """A job's public view (`relay.views.job_view`)."""
    num_map = {"type": ["object", "null"], "additionalProperties": {"type": "number"}}
    return {
        "type": "object",
        "required": ["id", "state", "method", "styles", "events_url", "result_url"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": [str(s) for s in JobState]},
            "method": {"type": "string"},
            "styles": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "weight": {"type": "number"}},
                },
            },
            "params": {"type": "object"},
            "width": NULL_INT,
            "height": NULL_INT,
            "position": NULL_INT,
            "waiting_reason": NULL_STR,
            "epoch": NULL_INT,
            "epochs": NULL_INT,
            "losses": num_map,
            "node": NULL_STR,
            "attempts": {"type": "integer"},
            "created": NULL_STR,
            "started": NULL_STR,
            "finished": NULL_STR,
            "expires": NULL_STR,
            "error": NULL_STR,
            "filename": NULL_STR,
            "events_url": {"type": "string"},
            "content_url": {"type": "string"},
            "style_urls": {"type": "array", "items": {"type": "string"}},
            "result_url": NULL_STR,
            "preview_url": NULL_STR,
            "partial": {
                "type": ["object", "null"],
                "description": "A cancelled or failed Gatys job's painting so far (its "
                "latest checkpoint): the epoch it reached and where GET serves the PNG.",
                "required": ["epoch", "url"],
                "properties": {"epoch": {"type": "integer"}, "url": {"type": "string"}},
            },
            "shared": {"type": "boolean"},
            "gallery_id": NULL_STR,
        },
    }


def _styles_view() -> Schema:
    return {
        "type": "object",
        "required": ["styles", "methods", "limits"],
        "properties": {
            "styles": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "kind", "name", "methods"],
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"type": "string", "enum": ["painting", "fast"]},
                        "name": {"type": "string"},
                        "methods": {"type": "array", "items": {"type": "string"}},
                        "thumbnail_url": NULL_STR,
                    },
                },
            },
            "methods": {"type": "array", "items": {"type": "object"}},
            "limits": {"type": "object"},
        },
    }


def _json(ref: str, description: str, headers: Schema | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _media(media: str, description: str) -> Schema:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _op(summary: str, responses: dict[int, Schema], errors: tuple[int, ...], **more: Any) -> Schema:
    answers: dict[str, Schema] = {str(k): v for k, v in responses.items()}
    for status in sorted(set(errors)):
        answers.setdefault(str(status), {"$ref": f"#/components/responses/E{status}"})
    return {"summary": summary, "responses": answers, **more}


def _path_param(name: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def _post_job(config: Config, seeds: bool) -> Schema:
    location = {"Location": {"schema": {"type": "string"}, "description": "The job's URL."}}
    ended = _json("Job", "With `wait`: the job ended within it (done, failed or cancelled).")
    ended["content"]["image/png"] = {"schema": {"type": "string"}}
    ended["description"] += " With `Accept: image/png` and done: the result PNG itself."
    ended["headers"] = location
    wait = {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "Seconds to wait for the job to end before answering (202 if not).",
        "schema": {"type": "number", "minimum": 0, "maximum": waiting.MAX_WAIT},
    }
    name = "Seeds" if seeds else ""
    example = {"model": "udnie"} if seeds else {"style": "painting:udnie", "method": "arbitrary"}
    return _op(
        "The seeds' classic job request (also takes `model`)" if seeds else "Create a job",
        {
            200: ended,
            202: _json("Job", "Accepted: queued (or already running or ended).", location),
        },
        WRITE_ERRORS,
        parameters=[wait],
        requestBody={
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{name}JobJson"},
                    "example": {"image": EXAMPLE_PNG, **example},
                },
                "multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{name}JobForm"}},
            },
        },
    )


def document(config: Config) -> Schema:
    """The OpenAPI 3.1 document of this relay, with its configured limits."""
    job_id = [_path_param("id")]
    job = _json("Job", "The job's view.")
    obj = {"type": "object"}
    any_json = {"description": "JSON", "content": {"application/json": {"schema": obj}}}
    paths: Schema = {
        "/api/styles": {
            "get": _op("Styles, methods and limits", {200: _json("Styles", "")}, READ_ERRORS)
        },
        "/api/styles/{style}/{kind}": {
            "get": _op(
                "A style's thumbnail or picture",
                {200: _media("image/jpeg", "The picture.")},
                READ_ERRORS,
                parameters=[
                    _path_param("style"),
                    _path_param("kind", {"type": "string", "enum": ["thumbnail", "image"]}),
                ],
            )
        },
        "/help": {"get": _op("Styles plus a list of endpoints", {200: any_json}, READ_ERRORS)},
        "/api/jobs": {"post": _post_job(config, seeds=False)},
        "/transform": {"post": _post_job(config, seeds=True)},
        "/api/jobs/{id}": {
            "get": _op("A job's state", {200: job}, READ_ERRORS, parameters=job_id),
            "delete": _op(
                "Cancel a job; delete an ended one and its images",
                {200: _json("Job", "Cancelled."), 204: {"description": "Deleted."}},
                WRITE_ERRORS,
                parameters=job_id,
            ),
        },
        "/api/jobs/{id}/events": {
            "get": _op(
                "A WebSocket of the job's events (JSON text frames)",
                {101: {"description": "Switching to WebSocket."}},
                READ_ERRORS,
                parameters=job_id,
            )
        },
        "/api/live": {
            "get": _op(
                "A WebSocket of a live session: camera frames in, painted frames out "
                "(docs/api.md, Live)",
                {101: {"description": "Switching to WebSocket."}},
                READ_ERRORS,
            )
        },
        "/api/jobs/{id}/result": {
            "get": _op(
                "The result PNG", {200: _media("image/png", "")}, READ_ERRORS, parameters=job_id
            )
        },
        "/api/jobs/{id}/preview": {
            "get": _op(
                "The latest preview",
                {200: _media("image/jpeg", "")},
                READ_ERRORS,
                parameters=job_id,
            )
        },
        "/api/jobs/{id}/partial": {
            "get": _op(
                "A cancelled or failed job's painting so far (its latest checkpoint)",
                {200: _media("image/png", "")},
                READ_ERRORS,
                parameters=job_id,
            )
        },
        "/api/jobs/{id}/content": {
            "get": _op(
                "The photo as sent to the node",
                {200: _media("image/png", "")},
                READ_ERRORS,
                parameters=job_id,
            )
        },
        "/api/jobs/{id}/style/{n}": {
            "get": _op(
                "Style image n as sent to the node",
                {200: _media("image/png", "")},
                READ_ERRORS,
                parameters=[*job_id, _path_param("n", {"type": "integer", "minimum": 0})],
            )
        },
        "/api/jobs/{id}/share": {
            "post": _op(
                "Show the job in the public gallery (once done)",
                {200: job},
                WRITE_ERRORS,
                parameters=[
                    *job_id,
                    {"name": "share_style", "in": "query", "schema": _bool()},
                ],
            ),
            "delete": _op(
                "Withdraw the job from the gallery", {200: job}, WRITE_ERRORS, parameters=job_id
            ),
        },
        "/api/nodes": {"get": _op("Connected nodes", {200: _json("Nodes", "")}, READ_ERRORS)},
        "/api/gallery": {
            "get": _op(
                "Shown gallery items, newest first",
                {200: _json("Gallery", "")},
                READ_ERRORS,
                parameters=[
                    {"name": q, "in": "query", "schema": {"type": "string", "maxLength": 100}}
                    for q in ("cursor", "style", "method")
                ],
            )
        },
        "/api/gallery/{item}/{kind}": {
            "get": _op(
                "A gallery item's thumbnail (JPEG), result or style (PNG)",
                {
                    200: {
                        "description": "The picture.",
                        "content": {
                            "image/png": {"schema": {"type": "string"}},
                            "image/jpeg": {"schema": {"type": "string"}},
                        },
                    }
                },
                READ_ERRORS,
                parameters=[
                    _path_param("item"),
                    _path_param(
                        "kind", {"type": "string", "enum": ["thumbnail", "image", "style"]}
                    ),
                ],
            )
        },
        "/api/gallery/{item}/report": {
            "post": _op(
                "Report a gallery item to the operator",
                {202: any_json},
                WRITE_ERRORS,
                parameters=[_path_param("item")],
            )
        },
        "/healthz": {"get": _op("Liveness and disk state", {200: any_json}, READ_ERRORS)},
        "/metrics": {
            "get": _op("Prometheus metrics", {200: _media("text/plain", "")}, READ_ERRORS)
        },
        "/status": {"get": _op("Status page", {200: _media("text/html", "")}, READ_ERRORS)},
        "/openapi.json": {"get": _op("This document", {200: any_json}, READ_ERRORS)},
        "/": {"get": _op("The web page", {200: _media("text/html", "")}, READ_ERRORS)},
        "/index": {
            "get": _op(
                "The web page (the seeds' address)", {200: _media("text/html", "")}, READ_ERRORS
            )
        },
        "/api": {
            "get": _op(
                "This API described for people (docs/api.md as a page)",
                {200: _media("text/html", "")},
                READ_ERRORS,
            )
        },
    }
    _name_operations(paths)
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": False,
    }
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stylerelay relay API",
            "version": "1",
            "description": "Neural style transfer jobs, run by GPU nodes. Every error is JSON "
            '`{"error": "..."}`; any path answers 405 for a method it does not take. '
            "Prose: docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": error,
                "Job": job_view(),
                "JobJson": job_json(config),
                "JobForm": job_form(config),
                "SeedsJobJson": job_json(config, seeds=True),
                "SeedsJobForm": job_form(config, seeds=True),
                "Styles": _styles_view(),
                "Nodes": {
                    "type": "object",
                    "required": ["nodes"],
                    "properties": {"nodes": {"type": "array", "items": obj}},
                },
                "Gallery": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": {"type": "array", "items": obj},
                        "next_cursor": NULL_STR,
                    },
                },
            },
            "responses": {
                f"E{status}": {"description": text, "content": error_ref}
                for status, text in ERROR_STATUSES.items()
            },
            # Optional: anonymous callers are limited by address; a key is its own client
            # with its own quotas (`python -m relay keys add`).
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
    }


def _name_operations(paths: Schema) -> None:
    """Give each operation an id (`get_api_jobs_id_result`) and link a new job's answers to
    the operations on it, so that tools can follow a job from its creation."""
    for path, ops in paths.items():
        for method, op in ops.items():
            words = "".join(c if c.isalnum() else "_" for c in path).strip("_")
            op["operationId"] = f"{method}_{words}" if words else f"{method}_root"
    links = {
        op["operationId"]: {
            "operationId": op["operationId"],
            "parameters": {"id": "$response.body#/id"},
        }
        for path, ops in paths.items()
        if path.startswith("/api/jobs/{id}") and "{n}" not in path
        for op in ops.values()
    }
    for path in ("/api/jobs", "/transform"):
        for status in ("200", "202"):
            response = paths[path]["post"]["responses"][status]
            response["links"] = {k: v for k, v in links.items()}


DOCUMENT = web.AppKey("openapi", dict[str, Any])


async def get_openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document of this relay."""
    return web.json_response(request.app[DOCUMENT], headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    """Register `/openapi.json`, its document built once from the app's config."""
    app[DOCUMENT] = document(app[CONFIG])
    app.router.add_get("/openapi.json", get_openapi)
