"""The service's OpenAPI page (`/docs`, `/docs.json`) as ctloop's, not BentoML's template.

BentoML 1.4 builds the spec in `_bentoml_sdk.service.openapi.generate_spec`: the title is
the service name, the version "None" outside a built Bento, the description BentoML's
README template (PyPI/Slack/Twitter badges, "a Machine Learning Service created with
BentoML"), each endpoint's description the method's whole docstring (ours held notes on
worker CPU), and a `dict` return annotation becomes `{"additionalProp1": {}}`. There is no
option for any of these, so `install` wraps the service's `openapi_spec` property and
rewrites those parts from the feature view: title and version (ctloop's version and the
model being served), the view's description, per endpoint a short description, the 200
answer's schema built from the label kind (classes, score, probabilities or the value)
and request/answer examples. The spec stays BentoML's object, so `bentoml build` still
writes it into the Bento.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import attr
import bentoml
from bentoml._internal.service.openapi.specification import Info, OpenAPISpecification

from ctloop.features.records import example_record
from ctloop.features.view import FeatureView

DESCRIPTIONS = {
    "/predict": "Predict one record. The answer names the model version that made it and a "
    "`request_id` under which the prediction log keeps the request.",
    "/predict_batch": "Predict up to CTLOOP_SERVING_MAX_BATCH records with one model call; "
    "answers come in request order. The records may also come in the split form, field "
    'names once and one list of values per record: `{"columns": [...], "data": [[...], '
    "...]}` (pandas' orient='split'; a column left out is a field every record leaves out).",
    "/admin/reload": "Load the registry's `champion` now (the CT pipeline calls this after a "
    "promotion). Needs `Authorization: Bearer <CTLOOP_ADMIN_TOKEN>`.",
}


RELOAD_ANSWER = {
    "type": "object",
    "title": "reload answer",
    "properties": {
        "status": {"type": "string", "description": "swapped, unchanged or error"},
        "version": {"type": "string", "description": "the version this worker serves now"},
        "previous_version": {"type": "string", "nullable": True},
        "view": {"type": "string"},
        "requested_version": {"type": "string", "nullable": True},
        "worker": {"type": "integer"},
        "note": {"type": "string", "description": "when the registry's champion differs"},
        "error": {"type": "string", "description": "why the reload failed or was refused"},
    },
}


def ctloop_version() -> str:
    """The installed ctloop's version ("unknown" when run from a bare source tree)."""
    try:
        return importlib.metadata.version("ctloop")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def served_version() -> str | None:
    """The model version this worker serves now (None outside a worker or before a load)."""
    try:
        manager = getattr(bentoml.get_current_service(), "manager", None)
    except Exception:  # outside a worker there is no current service
        return None
    current = getattr(manager, "current", None)
    return None if current is None else str(current.version)


def answer_schema(view: FeatureView) -> dict[str, Any]:
    """JSON schema of one answer, by the view's label kind."""
    label = view.label
    props: dict[str, Any] = {
        "request_id": {"type": "string", "description": "key of this answer in prediction_log"},
    }
    required = ["request_id", "prediction"]
    if label.is_regression:
        props["prediction"] = {"type": "number", "description": f"predicted {label.name}"}
    else:
        classes = [str(c) for c in label.class_list]
        props["prediction"] = {"type": "string", "enum": classes,
                               "description": f"predicted {label.name}"}  # fmt: skip
        props["probabilities"] = {
            "type": "object",
            "description": "probability of every class (they sum to 1)",
            "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in classes},
            "required": classes,
        }
        required.append("probabilities")
        if label.is_binary:
            props["score"] = {
                "type": "number", "minimum": 0, "maximum": 1,
                "description": f"probability of the positive class '{label.positive_class}'",
            }  # fmt: skip
            required.append("score")
    return {"type": "object", "title": f"{view.name} answer", "properties": props,
            "required": required}  # fmt: skip


def answer_example(view: FeatureView) -> dict[str, Any]:
    """A plausible answer of the view's kind, for the docs."""
    label = view.label
    example: dict[str, Any] = {"request_id": "3f0c9a1e5b2d4c6f8a7b9c0d1e2f3a4b"}
    if label.is_regression:
        low = label.min if label.min is not None else 0.0
        example["prediction"] = round(float(low) + 1.5, 2)
        return example
    classes = [str(c) for c in label.class_list]
    rest = round(0.2 / max(len(classes) - 1, 1), 4)
    probabilities = {c: (0.8 if i == 0 else rest) for i, c in enumerate(classes)}
    example["prediction"] = classes[0]
    if label.is_binary:
        example["score"] = probabilities[str(label.positive_class)]
    example["probabilities"] = probabilities
    return example


def _answer(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "The prediction",
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def rewrite(spec: OpenAPISpecification, view: FeatureView) -> OpenAPISpecification:
    """Rewrite title, version, description, answers and examples of BentoML's spec."""
    served = served_version()
    model = f"model {view.name} v{served}" if served else f"model {view.name}"
    info = Info(
        title=f"ctloop prediction service: {view.name}",
        version=f"ctloop {ctloop_version()}, {model}",
        description=(
            f"{view.description.strip()}\n\n"
            f"Serves the `champion` of the registered model `{view.name}` "
            f"(label `{view.label.name}`, {view.label.kind}). Every answer is logged to "
            "`prediction_log`; `GET /metadata` says which version is loaded."
        ),
    )
    answer, example = answer_schema(view), answer_example(view)
    batch = {
        "type": "object",
        "title": f"{view.name} batch answer",
        "properties": {"model_version": {"type": "string"},
                       "predictions": {"type": "array", "items": answer}},
        "required": ["model_version", "predictions"],
    }  # fmt: skip
    answers = {
        "/predict": _answer(
            {**answer, "properties": {**answer["properties"], "model_version": {"type": "string"}},
             "required": [*answer["required"], "model_version"]},
            {**example, "model_version": "3"},
        ),
        "/predict_batch": _answer(batch, {"model_version": "3", "predictions": [example]}),
        "/admin/reload": _answer(RELOAD_ANSWER, {
            "status": "swapped", "version": "4", "previous_version": "3",
            "view": view.name, "requested_version": "4", "worker": 0,
        }),
    }  # fmt: skip
    request = example_record(view)
    paths = dict(spec.paths)
    for route, item in paths.items():
        post = getattr(item, "post", None)
        if not isinstance(post, dict) or route not in DESCRIPTIONS:
            continue
        post = {**post, "description": DESCRIPTIONS[route]}
        if route in answers:
            post["responses"] = {**post["responses"], 200: answers[route]}
        if route in ("/predict", "/predict_batch"):
            content = _plain(post["requestBody"]["content"]["application/json"])
            body = request if route == "/predict" else {"records": [request]}
            post["requestBody"] = {**post["requestBody"], "content": {
                "application/json": {**content, "example": body}}}  # fmt: skip
        paths[route] = attr.evolve(item, post=post)
    return attr.evolve(spec, info=info, paths=paths)


def _plain(media: Any) -> dict[str, Any]:
    """A MediaType (attrs) or a dict, as a dict."""
    if isinstance(media, dict):
        return media
    return {k: v for k, v in attr.asdict(media, recurse=False).items() if v is not None}


def install(service: Any, view: FeatureView) -> None:
    """Have `service` (a `@bentoml.service` object) publish ctloop's spec.

    `openapi_spec` is a property of BentoML's `Service` class, read on every `/docs.json`;
    a subclass that rewrites it is swapped in as the object's class (BentoML's `Service`
    is a slotted attrs class, hence the empty `__slots__`).
    """
    base = type(service)

    class DocumentedService(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def openapi_spec(self) -> OpenAPISpecification:
            """BentoML's spec, rewritten as ctloop's."""
            return rewrite(base.openapi_spec.fget(self), view)  # type: ignore[attr-defined]

    service.__class__ = DocumentedService
