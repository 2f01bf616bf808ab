"""Demo models: trained deterministically from datasets scikit-learn ships, registered
through the same upload path as any model (sandbox check, chunks, version row).

Training and checking take seconds, so the skops bytes are cached on disk and in the
process; the sandbox caches its verdict per content hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.rbac.permissions import ADMIN, GUEST, USER
from mlgate.serving import repository as repo
from mlgate.serving import service

if TYPE_CHECKING:
    from mlgate.context import AppContext

CACHE_VERSION = "1"


@dataclass(frozen=True, slots=True)
class DemoModel:
    name: str
    description: str
    task: str
    feature_names: list[str]
    class_labels: list[str] | None
    allowed_roles: list[str]
    skops: bytes


_BUILT: dict[str, DemoModel] = {}


def _snake(name: str) -> str:
    name = re.sub(r"\s*\(.*?\)", "", name).strip().lower()
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def _dataset(name: str) -> Any:
    from sklearn import datasets

    if name == "iris":
        return datasets.load_iris()
    if name == "breast-cancer":
        return datasets.load_breast_cancer()
    return datasets.load_diabetes()


def train_demo(name: str) -> tuple[Any, Any]:
    """(fitted estimator, dataset bunch). Deterministic: these fits use no randomness.
    Tests use it to compare served predictions with scikit-learn's."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = _dataset(name)
    if name == "diabetes":
        est: Any = Ridge(alpha=0.01)
    else:
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    est.fit(data.data, data.target)
    return est, data


def _build(name: str, cache_dir: Path) -> DemoModel:
    import skops.io as sio

    path = cache_dir / f"{name}-v{CACHE_VERSION}.skops"
    try:
        blob = path.read_bytes()
        data = _dataset(name)
    except OSError:
        est, data = train_demo(name)
        blob = sio.dumps(est)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
        except OSError:
            pass  # a cache only
    features = [_snake(f) for f in data.feature_names]
    if name == "diabetes":
        return DemoModel(
            name,
            "Diabetes progression one year after baseline (ridge regression)",
            "regression",
            features,
            None,
            [USER, ADMIN],
            blob,
        )
    labels = [str(t) for t in data.target_names]
    if name == "iris":
        return DemoModel(
            name,
            "Iris species from sepal and petal measurements",
            "classification",
            features,
            labels,
            [GUEST, USER, ADMIN],
            blob,
        )
    return DemoModel(
        name,
        "Breast tumour diagnosis from cell nuclei measurements",
        "classification",
        features,
        labels,
        [USER, ADMIN],
        blob,
    )


DEMO_NAMES = ("iris", "breast-cancer", "diabetes")


async def demo_models(cache_dir: Path) -> list[DemoModel]:
    missing = [n for n in DEMO_NAMES if n not in _BUILT]
    built = await asyncio.gather(*(asyncio.to_thread(_build, n, cache_dir) for n in missing))
    for model in built:
        _BUILT[model.name] = model
    return [_BUILT[n] for n in DEMO_NAMES]


async def ensure_demo_models(ctx: AppContext, *, created_by: uuid.UUID | None) -> list[str]:
    """Register the demo models when the registry is empty. Returns the names added."""
    async with ctx.db.session() as session:
        models, _ = await repo.catalogue(session)
    if models:
        return []
    demos = await demo_models(ctx.settings.data_dir / "demo-cache")
    added: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mlgate-demo-") as tmp:
        spooled = []
        for demo in demos:
            path = Path(tmp) / f"{demo.name}.skops"
            path.write_bytes(demo.skops)
            sha = hashlib.sha256(demo.skops).hexdigest()
            spooled.append(service.SpooledUpload(path, len(demo.skops), sha))
        # Warm the sandbox verdicts concurrently; the uploads below then hit its cache.
        await asyncio.gather(
            *(service.precheck(ctx, _form(d), s) for d, s in zip(demos, spooled, strict=True))
        )
        for demo, upload in zip(demos, spooled, strict=True):
            async with ctx.db.session() as session:
                await service.upload(
                    ctx, session, None, None, _form(demo), upload, created_by=created_by
                )
            added.append(demo.name)
    return added


def _form(demo: DemoModel) -> service.UploadForm:
    return service.UploadForm(
        name=demo.name,
        filename=f"{demo.name}.skops",
        description=demo.description,
        task=demo.task,
        feature_names=demo.feature_names,
        class_labels=demo.class_labels,
        allowed_roles=demo.allowed_roles,
    )
