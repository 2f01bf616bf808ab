"""Run upload checks in a child process with memory and CPU-time limits.

A hostile file may exhaust memory, spin, or crash a native library while being parsed;
in a child with RLIMIT_AS and RLIMIT_CPU that costs an error answer, not the server.
Protocol: the parent writes a JSON job on stdin; the child answers one JSON line and
writes the ONNX conversion (if any) to the path the job names.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.errors import ErrorCode, MlgateError, ValidationFailed


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    cpu_seconds: int
    max_model_bytes: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    report: dict[str, Any]
    converted: bytes | None


# Results of checks already passed in this process, keyed by content and options, so the
# same bytes (demo models, re-uploads) are not checked twice. Bounded: a result may hold
# a converted model, and every upload would otherwise stay in memory for good.
_RESULTS: OrderedDict[str, CheckResult] = OrderedDict()
RESULTS_MAX_ENTRIES = 16
RESULTS_MAX_BYTES = 64 << 20


def _remember(key: str, result: CheckResult) -> None:
    _RESULTS[key] = result
    _RESULTS.move_to_end(key)

    def held() -> int:
        return sum(len(r.converted or b"") for r in _RESULTS.values())

    while _RESULTS and (len(_RESULTS) > RESULTS_MAX_ENTRIES or held() > RESULTS_MAX_BYTES):
        _RESULTS.popitem(last=False)


def _child_env() -> dict[str, str]:
    # The child parses untrusted files: it gets no mlgate setting (secrets, database URL).
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLGATE_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _key(sha256: str, fmt: str, hints: dict[str, Any], trusted: list[str]) -> str:
    blob = json.dumps([sha256, fmt, hints, sorted(trusted)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


async def check_upload(
    path: Path,
    sha256: str,
    fmt: str,
    hints: dict[str, Any],
    trusted: list[str],
    limits: Limits,
) -> CheckResult:
    """Validate (and convert) an uploaded artifact in a resource-limited child process."""
    key = _key(sha256, fmt, hints, trusted)
    if key in _RESULTS:
        _RESULTS.move_to_end(key)
        return _RESULTS[key]
    with tempfile.TemporaryDirectory(prefix="mlgate-check-") as tmp:
        out_path = Path(tmp) / "converted.onnx"
        job = {
            "path": str(path),
            "fmt": fmt,
            "hints": hints,
            "trusted": trusted,
            "out": str(out_path),
            "memory_mb": limits.memory_mb,
            "cpu_seconds": limits.cpu_seconds,
            "max_model_bytes": limits.max_model_bytes,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlgate.serving.sandbox",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_child_env(),
        )
        try:
            # Wall clock as a backstop for a child blocked without burning CPU.
            stdout, _ = await asyncio.wait_for(
                proc.communicate(json.dumps(job).encode()), timeout=limits.cpu_seconds * 2 + 30
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ValidationFailed("Checking the model took too long") from None
        answer = _parse(stdout)
        if answer is None:
            raise ValidationFailed(
                "The model could not be checked: the checker exceeded its memory or CPU "
                f"limit or crashed (exit {proc.returncode})"
            )
        if not answer.get("ok"):
            raise MlgateError(
                answer.get("detail") or "The model was refused",
                status=int(answer.get("status", 422)),
                code=ErrorCode(answer.get("code", ErrorCode.VALIDATION_ERROR)),
                title=answer.get("title"),
                errors=answer.get("errors"),
            )
        converted = await asyncio.to_thread(_read_if_exists, out_path)
    result = CheckResult(answer["report"], converted)
    _remember(key, result)
    return result


def _read_if_exists(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _parse(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _limit_self(memory_mb: int, cpu_seconds: int) -> None:
    import resource

    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child() -> int:
    job = json.loads(sys.stdin.read())
    _limit_self(int(job["memory_mb"]), int(job["cpu_seconds"]))
    # Imported after the limits so that parsing and conversion run under them.
    from mlgate.serving.checks import inspect_artifact

    try:
        data = Path(job["path"]).read_bytes()
        report, converted = inspect_artifact(
            data, job["fmt"], job["hints"], job["trusted"], int(job["max_model_bytes"])
        )
        if converted is not None:
            Path(job["out"]).write_bytes(converted)
        answer: dict[str, Any] = {"ok": True, "report": report}
    except MlgateError as exc:
        answer = {
            "ok": False,
            "status": exc.status,
            "code": str(exc.code),
            "title": exc.title,
            "detail": exc.detail,
            "errors": exc.errors,
        }
    except MemoryError:
        answer = {"ok": False, "status": 422, "detail": "The model exceeded the memory limit"}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
