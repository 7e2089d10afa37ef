"""The BentoML service: the champion of one feature view behind HTTP, every answer logged.

    bentoml serve serving.service:ModelService --port 3000

Endpoints: `POST /predict` (one record), `POST /predict_batch` (`{"records": [...]}`, one
model call per batch), `GET /metadata`, `POST /admin/reload` (bearer token), and BentoML's
own `/livez`, `/readyz` (503 until a model is loaded), `/metrics` and the OpenAPI page `/`.

The request schema is built from the feature view at import (the decorators need it), so
bad input is refused by BentoML's validation with a 400 naming each bad field and never
reaches the model; a body over CTLOOP_SERVING_MAX_BODY_BYTES is refused with a 413 before
it is read (`serving/limits.py`), a non-JSON body with a 415, and a bad request costs a
small 400 and one log line (`serving/client_errors.py`). Each worker process loads the
champion in the background, polls the registry and swaps models atomically
(`serving/model.py`), and writes its prediction log through its own `PredictionLogWriter`
off the request path, journaling each row to disk before the answer is returned
(`ctloop.predlog`).

`CTLOOP_SERVING_LOG_MODE=off|sync` exist for the benchmark only: `off` logs nothing, `sync`
is the naive design that inserts and commits one row inside each request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Annotated, Any

import bentoml
import orjson
from pydantic import ConfigDict, Field, ValidationError, create_model, model_validator
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ctloop.core.columnar import (
    SPLIT_KEYS,
    ColumnarBatch,
    SplitShapeError,
    checked_batch,
    split_records,
)
from ctloop.errors import StoreUnavailableError
from ctloop.features.records import entity_of, record_model
from ctloop.features.view import load_view
from ctloop.predlog.store import (
    CANARY_ROLE,
    CHAMPION_ROLE,
    SHADOW_ROLE,
    PredictionLog,
)
from ctloop.predlog.writer import PredictionLogWriter
from ctloop.redact import RedactingFilter, redact
from ctloop.registry import Registry
from ctloop.settings import get_settings
from ctloop.store.dates import utc_now
from ctloop.store.features import FeatureStore
from ctloop.store.online import OnlineFeatures
from serving import openapi
from serving.client_errors import (
    BENTOML_REQUEST_LOGGER,
    CappedClientErrors,
    JsonBodiesOnly,
    OneLineClientErrors,
    too_many_unknown_fields,
)
from serving.config import ServingConfig, admin_token_problem
from serving.limits import BodySizeLimit
from serving.logrows import answers_of, log_rows, log_writer
from serving.metrics import worker_metrics
from serving.model import LoadedModel, ModelManager
from serving.online import FillError, OnlineFill
from serving.shadow import ShadowScorer

log = logging.getLogger(__name__)

SETTINGS = get_settings()
CONFIG = ServingConfig()
VIEW = load_view(CONFIG.view_name(SETTINGS))
_ViewRecord = record_model(VIEW)


_KNOWN_FIELDS = frozenset(_ViewRecord.model_fields)  # read once: pydantic's property is slow


def _few_unknown_fields(data: Any) -> Any:
    """A record with hundreds of unknown keys fails as one error, not one per key."""
    problem = too_many_unknown_fields(data, _KNOWN_FIELDS)
    if problem is not None:
        raise ValueError(problem)
    return data


# the view's record model (same name and schema) with the unknown-field bound in front
Record = create_model(
    _ViewRecord.__name__,
    __base__=_ViewRecord,
    __validators__={"few_unknown_fields": model_validator(mode="before")(_few_unknown_fields)},
)
MAX_BATCH = CONFIG.max_batch


Batch = Annotated[
    list[Record],  # type: ignore[valid-type]
    Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} records (CTLOOP_SERVING_MAX_BATCH)",
    ),
]


class BatchInput(bentoml.IODescriptor):
    """The body of /predict_batch: `records` and nothing else (a misspelt key is an error
    naming it, not an ignored option), or the same records in the split form (`columns`
    and `data`, see `ctloop.core.columnar.split_records`)."""

    model_config = ConfigDict(extra="forbid")

    records: Batch

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> BatchInput:
        """A plain batch is checked a column at a time and reaches the API as a
        `ColumnarBatch` (`ctloop.core.columnar`: half the CPU per record of one pydantic
        record each, and a frame CatBoost reads 4x faster than lists); anything else goes
        through BentoML's validation as before, so every refusal is the same 400 naming
        the record and the field."""
        body = await request.body()  # cached: BentoML's own parse reads it again
        checked = checked_batch(VIEW, body, MAX_BATCH)
        if checked is not None:
            return cls.model_construct(records=checked)
        split = _split_document(body)
        if split is not None:  # judged as the records it holds: the same 400s
            return cls.model_validate_json(_split_as_records(split))
        return await super().from_http_request(request, serde)  # type: ignore[return-value]


def _split_document(body: bytes) -> dict[str, Any] | None:
    """A body in the split form (`columns` without `records`), decoded; else None. Read
    by the standard library, which also reads what orjson refuses (NaN, 1e400, integers
    past 64 bits), so such a value is judged as in a records body."""
    if b'"columns"' not in body:  # most bodies: no second decode
        return None
    try:
        document = json.loads(body)
    except ValueError:  # not JSON: the request model says so
        return None
    if isinstance(document, dict) and "columns" in document and "records" not in document:
        return document
    return None


def _split_as_records(document: dict[str, Any]) -> bytes:
    """A split body rewritten as `{"records": [...]}` (other keys kept, so the model still
    refuses them); a wrong shape is a validation error at its place (`data.3`)."""
    try:
        data = document.get("data")
        if isinstance(data, list) and not 1 <= len(data) <= MAX_BATCH:
            raise SplitShapeError(("data",), f"1 to {MAX_BATCH} rows expected, got {len(data)}")
        records = split_records(document)
    except SplitShapeError as exc:
        raise ValidationError.from_exception_data(
            "BatchInput",
            [{"type": "value_error", "loc": exc.loc, "input": None,
              "ctx": {"error": exc.message}}],
        ) from None  # fmt: skip
    rest = {k: v for k, v in document.items() if k not in SPLIT_KEYS}
    return json.dumps({"records": records, **rest}).encode()  # NaN stays NaN


# MLflow's HTTP client retries a dead tracking server 7 times with exponential backoff and
# waits up to 120 s per attempt: about four minutes per registry call (measured: 4.6 s with
# these values). A worker would report a dead registry minutes late and an admin reload
# would hang past the request timeout. Serving only reads the registry and keeps serving
# what it has when it cannot, so it fails fast and asks again on the next poll. Values set
# in the environment win.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class FastJSONResponse(JSONResponse):
    """A prediction's JSON rendered by orjson: starlette's `json.dumps` was 4% of a batch
    worker's CPU (py-spy). Whatever orjson refuses starlette still renders."""

    def render(self, content: Any) -> bytes:
        """Encode with orjson (the fast path); starlette's encoder takes what orjson refuses."""
        try:
            return orjson.dumps(content)
        except TypeError:
            return super().render(content)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


# the feature store failing an online lookup: the request cannot be completed now (503),
# the service itself is fine and answers full records as before
STORE_ERRORS = (StoreUnavailableError, SQLAlchemyError, OSError)


def _store_down(exc: BaseException) -> JSONResponse:
    log.warning("online features: the feature store did not answer: %s", redact(str(exc))[:300])
    return _error(503, "the feature store did not answer; send every feature or retry",
                  **{"Retry-After": "5"})  # fmt: skip


async def _metadata_endpoint(_: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    return JSONResponse(service.metadata())


# BentoML APIs are POST only; GET /metadata comes from a tiny mounted Starlette app.
extra_routes = Starlette(routes=[Route("/metadata", _metadata_endpoint, methods=["GET"])])


@bentoml.asgi_app(extra_routes, path="/")
@bentoml.service(
    name="ctloop",
    workers=CONFIG.workers,
    threads=CONFIG.threads,
    traffic={"timeout": CONFIG.timeout_seconds},
    labels={"feature_view": VIEW.name},
)
class ModelService:
    """Serves the `champion` of the configured feature view from the MLflow registry."""

    def __init__(self) -> None:

        for name in ("ctloop", "serving"):  # BentoML shows WARNING+ of other loggers only
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.INFO)
        _guard_logging()
        if (problem := admin_token_problem(SETTINGS.admin_token)) is not None:
            log.warning("/admin/reload is disabled: %s", problem)
        for key, value in MLFLOW_CLIENT_DEFAULTS.items():  # read by MLflow on every call
            os.environ.setdefault(key, value)
        state_dir = CONFIG.resolved_state_dir(SETTINGS)
        self.metrics = worker_metrics(VIEW.name)
        self.worker_index = bentoml.server_context.worker_index
        self.manager = ModelManager(
            VIEW,
            Registry.from_settings(SETTINGS).activate(),
            poll_seconds=CONFIG.poll_seconds,
            signal_path=state_dir / f"reload-{VIEW.name}.signal",
            model_threads=CONFIG.model_threads,
            on_event=self.metrics.model_event,
        )
        self.store: FeatureStore | None = None
        self.predictions: PredictionLog | None = None
        self.writer: PredictionLogWriter | None = None
        if CONFIG.log_mode != "off" or VIEW.online is not None:
            self.store = FeatureStore.from_settings(SETTINGS)
        if self.store is not None and CONFIG.log_mode != "off":
            self.predictions = PredictionLog(self.store)
        if self.store is not None and self.predictions is not None and CONFIG.log_mode == "async":
            self.writer = log_writer(VIEW, self.store, self.predictions.write, CONFIG, state_dir,
                                     on_count=self._count_log)  # fmt: skip
        elif self.store is not None:
            self.store.init([], log_views=[VIEW] if self.predictions is not None else [])
        # a challenger on shadow trial is scored and logged by a child process at a lower
        # priority (serving/shadow.py), started when the first shadow work arrives
        self.shadow = ShadowScorer(linger=CONFIG.shadow_linger_seconds)
        self.online: OnlineFill | None = None
        if VIEW.online is not None and self.store is not None:
            self.online = OnlineFill(VIEW, OnlineFeatures(self.store, VIEW))
        self.manager.start()
        log.info("worker %s (pid %d) serving view %s, prediction log %s", self.worker_index,
                 os.getpid(), VIEW.name, CONFIG.log_mode)  # fmt: skip

    def __is_ready__(self) -> bool:
        """Ready once a checked model is loaded; /readyz answers 503 until then."""
        return self.manager.current is not None

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Per worker, on SIGTERM too: stop polling, flush the prediction log."""
        self.manager.stop()
        if self.writer is not None:  # the answers' rows first: they never wait on the shadow
            self.writer.close()
        self.shadow.close(timeout=10)  # the child logs what it was given, then exits
        if self.store is not None:
            self.store.dispose()

    # ------------------------------------------------------------------ APIs

    @bentoml.api(route="/predict")
    def predict(self, record: Record, /) -> dict[str, Any]:  # type: ignore[valid-type]
        """Predict one record. Classification: the class and every class's probability
        (binary adds `score`, the positive class's probability); regression: the value.

        Returns a ready JSONResponse, not a dict: for a `dict` return value BentoML 1.4
        builds a pydantic TypeAdapter and JSON schema on every response (~12% of a worker's
        CPU per request, measured with py-spy). The annotation still documents the shape.
        """
        model = self.manager.current  # read once: this request stays on this version
        if model is None:
            return _error(503, "no model loaded yet; see /metadata", **{"Retry-After": "5"})
        start = time.perf_counter()
        if self.online is not None:
            try:
                [values], from_store = self.online.complete([record], batch=False)
            except FillError as refused:
                return _error(refused.status, refused.message)
            except STORE_ERRORS as exc:
                return _store_down(exc)
        else:
            values, from_store = record.model_dump(), None
        role = CHAMPION_ROLE
        canary = self._canary_trial()
        if canary is not None and in_canary(entity_of(VIEW, values), canary):
            model, role = canary, CANARY_ROLE  # this entity is always answered by it
        output = model.predict(VIEW, [values])
        [rid] = request_ids(1)
        answers = answers_of(VIEW, output)
        latency = (time.perf_counter() - start) * 1000
        self._log(model, [values], [rid], answers, latency, "predict", from_store, role=role)
        self._shadow([values], [rid], from_store)
        self.manager.recent.append(values)
        return FastJSONResponse({"request_id": rid, **answers[0], "model_version": model.version})

    @bentoml.api(route="/predict_batch", input_spec=BatchInput)
    def predict_batch(self, records: Batch) -> dict[str, Any]:
        """Predict up to CTLOOP_SERVING_MAX_BATCH records with one model call."""
        model = self.manager.current
        if model is None:
            return _error(503, "no model loaded yet; see /metadata", **{"Retry-After": "5"})
        start = time.perf_counter()
        # `records` is a ColumnarBatch when BatchInput.from_http_request checked the body a
        # column at a time (the plain case), else the request model's validated records
        from_store = None
        columnar = isinstance(records, ColumnarBatch)
        self.metrics.batch_records.labels(
            validation="columnar" if columnar else "request_model"
        ).inc(len(records))
        values: Sequence[dict[str, Any]]
        if columnar:  # the records' dumps, built only if the log or a shadow reads them
            values = records
        elif self.online is not None:
            try:
                values, from_store = self.online.complete(records, batch=True)
            except FillError as refused:
                return _error(refused.status, refused.message)
            except STORE_ERRORS as exc:
                return _store_down(exc)
        else:
            values = [r.model_dump() for r in records]
        ids = request_ids(len(values))
        canary = self._canary_trial()
        if canary is not None:  # each record by the model its entity is assigned to
            return self._canary_batch(model, canary, list(values), ids, from_store, start)
        output = model.predict_frame(records.frame) if columnar else model.predict(VIEW, values)
        answers = answers_of(VIEW, output)
        out = [{"request_id": i, **a} for i, a in zip(ids, answers, strict=True)]
        latency = (time.perf_counter() - start) * 1000
        self._log(model, values, ids, answers, latency / len(values), "predict_batch", from_store)
        self._shadow(values, ids, from_store)
        self.manager.recent.extend(values[:4])
        return FastJSONResponse({"model_version": model.version, "predictions": out})

    @bentoml.api(route="/admin/reload")
    async def reload(
        self, ctx: bentoml.Context, view: str | None = None, version: str | None = None
    ) -> dict[str, Any]:
        """Reload the champion now (the CT pipeline calls this after a promotion).

        Needs `Authorization: Bearer <CTLOOP_ADMIN_TOKEN>`. This worker reloads before
        answering; the other workers are told through a signal file and follow within a
        second. `version` is what the caller promoted; the registry's champion wins.
        """
        denied = _check_token(ctx.request.headers.get("authorization"))
        if denied is not None:
            status, message = denied
            ctx.response.status_code = status
            if status == 401:
                ctx.response.metadata["WWW-Authenticate"] = "Bearer"
            return {"error": message}
        if view is not None and view != VIEW.name:
            ctx.response.status_code = 400
            return {"error": f"this service serves view '{VIEW.name}', not '{view}'"}
        result = await asyncio.to_thread(self.manager.refresh, "admin reload", True)
        try:
            self.manager.signal_siblings()
        except OSError as exc:
            # The swap has happened and is answered: a 500 here would make the caller
            # believe it failed. The other workers follow at their next poll instead.
            log.warning("reload: could not signal the other workers (%s); they follow at "
                        "their next registry poll", exc)  # fmt: skip
            result["siblings"] = (
                f"not signalled ({redact(str(exc))[:200]}); they follow at their next poll "
                f"(within {CONFIG.poll_seconds:g} s)"
            )
        result.update(view=VIEW.name, requested_version=version, worker=self.worker_index)
        if result["status"] == "error":
            ctx.response.status_code = 502
        elif version is not None and result.get("version") != str(version):
            result["note"] = (
                f"the registry's champion is version {result.get('version')}, not {version}"
            )
        return result

    # ------------------------------------------------------------------ helpers

    def metadata(self) -> dict[str, Any]:
        """What this worker serves and how its prediction log is doing."""
        status = self.manager.status()
        writer = self.writer.stats() if self.writer is not None else None
        problem = admin_token_problem(SETTINGS.admin_token)
        return {
            "view": VIEW.name,
            "model_name": status.get("model_name", VIEW.name),
            "version": status.get("version"),
            "loaded_at": status.get("loaded_at"),
            "training_window": status.get("training_window"),
            "metrics": status.get("metrics"),
            "model": status,
            "worker": {"index": self.worker_index, "pid": os.getpid()},
            "prediction_log": {"mode": CONFIG.log_mode, "writer": writer},
            "shadow": self.shadow.stats(),
            "limits": {"max_batch": MAX_BATCH, "workers": CONFIG.workers},
            "admin": {"enabled": problem is None, "reason": problem},
        }

    def _canary_trial(self) -> LoadedModel | None:
        """The challenger when it is on a canary trial, else None."""
        trial = self.manager.challenger
        if trial is None or trial.info.tags.get("rollout") != CANARY_ROLE:
            return None
        return trial

    def _canary_batch(
        self,
        champion: LoadedModel,
        canary: LoadedModel,
        values: list[dict[str, Any]],
        ids: list[str],
        from_store: Sequence[Sequence[str]] | None,
        start: float,
    ) -> JSONResponse:
        """A batch during a canary trial: the records of canary entities answered by the
        challenger, the rest by the champion; each answer names its version."""
        picks = [in_canary(entity_of(VIEW, v), canary) for v in values]
        out: list[dict[str, Any]] = [{} for _ in values]
        for model, role, chosen in ((champion, CHAMPION_ROLE, False), (canary, CANARY_ROLE, True)):
            at = [i for i, p in enumerate(picks) if p is chosen]
            if not at:
                continue
            part = [values[i] for i in at]
            answers = answers_of(VIEW, model.predict(VIEW, part))
            latency = (time.perf_counter() - start) * 1000 / len(values)
            stores = [from_store[i] for i in at] if from_store is not None else None
            self._log(model, part, [ids[i] for i in at], answers, latency, "predict_batch",
                      stores, role=role)  # fmt: skip
            for i, answer in zip(at, answers, strict=True):
                out[i] = {"request_id": ids[i], **answer, "model_version": model.version}
        return FastJSONResponse({"model_version": champion.version, "predictions": out})

    def _shadow(
        self,
        values: Sequence[dict[str, Any]],
        ids: Sequence[str],
        from_store: Sequence[Sequence[str]] | None,
    ) -> None:
        """Hand the request to the challenger on shadow trial, if one is loaded: scored and
        logged (role `shadow`, request id + `SHADOW_SUFFIX`) by the shadow process after
        the caller has its answer, which the challenger never touches."""
        trial = self.manager.challenger
        if trial is None or trial.info.tags.get("rollout", "shadow") != SHADOW_ROLE:
            return
        if self.writer is None:  # no log to compare in: nothing to shadow for
            return
        if self.shadow.submit(trial.version, trial.info.uri, values, ids, from_store):
            self.metrics.predictions.labels(endpoint="shadow", model_version=trial.version).inc(
                len(values)
            )

    def _count_log(self, event: str, n: int) -> None:
        self.metrics.count_log(event, n)
        if self.writer is not None:
            self.metrics.log_pending.set(self.writer.pending)

    def _log(
        self,
        model: LoadedModel,
        values: Sequence[dict[str, Any]],
        ids: Sequence[str],
        answers: Sequence[dict[str, Any]],
        latency_ms: float,
        endpoint: str,
        from_store: Sequence[Sequence[str]] | None = None,
        role: str = CHAMPION_ROLE,
    ) -> None:
        """Count the answers and log them (rows as `serving.logrows.log_rows` builds them)."""
        self.metrics.predictions.labels(endpoint=endpoint, model_version=model.version).inc(
            len(values)
        )
        if CONFIG.log_mode == "off":
            return
        rows = log_rows(VIEW, model.version, values, ids, answers, latency_ms, utc_now(),
                        from_store, role)  # fmt: skip
        if self.writer is not None:
            self.writer.submit_many(rows)
        elif self.predictions is not None:  # "sync": the naive design, measured in the benchmark
            self.predictions.write(rows)


def request_ids(n: int) -> list[str]:
    """`n` request ids of 128 random bits as 32 hex digits, from one read of the system's
    random source: 1,000 `uuid4()` calls cost 1.6 ms, this 0.1."""
    text = os.urandom(16 * n).hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


def in_canary(entity: str | None, trial: LoadedModel) -> bool:
    """Whether this entity's requests go to the canary: a stable hash of the entity id
    against the trial's share, so a customer sees one model for the whole trial. Records
    without an entity stay with the champion."""
    if entity is None:
        return False
    share = float(trial.info.tags.get("rollout.share") or 0)
    bucket = int.from_bytes(hashlib.blake2b(entity.encode(), digest_size=8).digest(), "big")
    return bucket < share * 2**64


# Refuse oversized bodies from their Content-Length, before BentoML reads and parses them;
# refuse non-JSON bodies (415) the same way; cut the error list of a 4xx answer.
ModelService.add_asgi_middleware(BodySizeLimit, max_bytes=CONFIG.max_body_bytes)
# /docs and /docs.json: ctloop's title, version, answers and examples (serving/openapi.py)
openapi.install(ModelService, VIEW)
ModelService.add_asgi_middleware(JsonBodiesOnly)
ModelService.add_asgi_middleware(CappedClientErrors)


def _guard_logging() -> None:
    """Per worker: a client's 4xx is one log line without traceback or input values, and
    no handler ever prints a URL password (an MLflow error quotes its tracking URI)."""
    request_log = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, OneLineClientErrors) for f in request_log.filters):
        request_log.addFilter(OneLineClientErrors())
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def _check_token(header: str | None) -> tuple[int, str] | None:
    """None when the bearer token matches CTLOOP_ADMIN_TOKEN, else (status, reason)."""
    token = SETTINGS.admin_token
    if not token:
        return 403, "the admin endpoint is disabled: CTLOOP_ADMIN_TOKEN is not set"
    if (problem := admin_token_problem(token)) is not None:
        return 403, f"the admin endpoint is disabled: {problem}"
    if not header or not header.lower().startswith("bearer "):
        return 401, "missing bearer token (Authorization: Bearer <CTLOOP_ADMIN_TOKEN>)"
    if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return 403, "wrong admin token"
    return None
