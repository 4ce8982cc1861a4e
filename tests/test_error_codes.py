"""docs/errors.md and the code cannot drift apart.

The source of api/, core/ and worker/ is scanned (ast) for every code an AppError can
carry, directly (`AppError(409, "dataset_in_use", ...)`) or through a helper that
passes its parameter on (`invalid("invalid_csv", ...)`, `_problem(422, "empty_inputs")`),
and for every code a failed job can get (`JobFailure("out_of_memory", ...)`, the `code`
of each `apl.errors` class, `"error_code": "worker_lost"`). Each must be registered in
core/error_codes.py with the status it is raised with; the page is rendered from there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.error_codes import DOC_PATH, ERROR_CODES, JOB_ERROR_CODES, render_markdown

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("api", "core", "worker")
#: Codes that no AppError(...) call names: the Starlette handler's (made from the status phrase),
#: and the HTTP server's refusals of a request head (aplserve/server/http_protocol.py, written before the app
#: sees the request) and of a slow body (api/edge.py EdgeRefusal).
DYNAMIC = {"not_found": 404, "method_not_allowed": 405, "headers_too_large": 431, "request_timeout": 408}


@dataclass(frozen=True)
class Helper:
    """A function that builds an AppError from its parameters: where its code and status come from."""

    code_index: int | None
    code: str | None
    status_index: int | None
    status: int | None


def _trees() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(path.read_text("utf-8")) for d in SCANNED for path in sorted((ROOT / d).rglob("*.py"))
    }


def _name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _constants(tree: ast.Module) -> dict[str, object]:
    """Module-level NAME = literal assignments (INVALID_DATASET_STATUS = 422)."""
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _value(
    node: ast.expr, constants: dict[str, object], params: list[str]
) -> tuple[object | None, int | None]:
    """(literal value, None) or (None, index of the enclosing function's parameter it is)."""
    if isinstance(node, ast.Constant):
        return node.value, None
    if isinstance(node, ast.Name):
        if node.id in params:
            return None, params.index(node.id)
        return constants.get(node.id), None
    return None, None


def _helpers(trees: dict[Path, ast.Module]) -> dict[str, Helper]:
    """AppError itself, and every function whose return builds one (followed until nothing new)."""
    helpers = {"AppError": Helper(1, None, 0, None)}
    changed = True
    while changed:
        changed = False
        for tree in trees.values():
            constants = _constants(tree)
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef) or fn.name in helpers:
                    continue
                params = [arg.arg for arg in fn.args.args]
                for ret in ast.walk(fn):
                    if not (isinstance(ret, ast.Return) and isinstance(ret.value, ast.Call)):
                        continue
                    inner = helpers.get(_name(ret.value) or "")
                    if inner is None:
                        continue
                    code, code_index = _arg(ret.value, inner.code_index, inner.code, constants, params)
                    status, status_index = _arg(
                        ret.value, inner.status_index, inner.status, constants, params
                    )
                    helpers[fn.name] = Helper(code_index, code, status_index, status)  # type: ignore[arg-type]
                    changed = True
                    break
    return helpers


def _arg(
    call: ast.Call, index: int | None, fixed: object, constants: dict[str, object], params: list[str]
) -> tuple[object | None, int | None]:
    if index is None:
        return fixed, None
    if index >= len(call.args):
        return None, None
    return _value(call.args[index], constants, params)


def raised_codes() -> Iterator[tuple[str, int, str]]:
    """(code, status, where) for every AppError the scanned source can build with a literal code."""
    trees = _trees()
    helpers = _helpers(trees)
    for path, tree in trees.items():
        constants = _constants(tree)
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or (helper := helpers.get(_name(call) or "")) is None:
                continue
            code, _ = _arg(call, helper.code_index, helper.code, constants, [])
            status, _ = _arg(call, helper.status_index, helper.status, constants, [])
            if isinstance(code, str) and isinstance(status, int):
                yield code, status, f"{path.relative_to(ROOT)}:{call.lineno}"
        for node in ast.walk(tree):  # problem bodies written by hand: {"code": "not_ready", "status": 503}
            if isinstance(node, ast.Dict):
                pairs = {
                    k.value: v
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant)
                }
                code, status = pairs.get("code"), pairs.get("status")
                if isinstance(code, ast.Constant) and isinstance(status, ast.Constant):
                    yield str(code.value), int(status.value), f"{path.relative_to(ROOT)}:{node.lineno}"


def job_failure_codes() -> Iterator[tuple[str, str]]:
    import apl.errors

    for value in vars(apl.errors).values():
        if isinstance(value, type) and issubclass(value, apl.errors.AplError):
            yield value.code, f"apl.errors.{value.__name__}"
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            call = isinstance(node, ast.Call) and _name(node) == "JobFailure" and node.args
            if call and isinstance(node.args[0], ast.Constant):  # type: ignore[union-attr]
                yield str(node.args[0].value), f"{path.relative_to(ROOT)}:{node.lineno}"  # type: ignore[union-attr]
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "error_code"
                        and isinstance(value, ast.Constant)
                    ):
                        yield str(value.value), f"{path.relative_to(ROOT)}:{node.lineno}"


def test_the_scan_sees_the_codes_it_must() -> None:
    found = {(code, status) for code, status, _ in raised_codes()}
    for expected in [
        ("dataset_in_use", 409),  # AppError directly
        ("invalid_csv", 422),  # ingest's invalid() with a module constant status
        ("unknown_base_model", 422),  # _unprocessable() wrapping AppError
        ("empty_inputs", 422),  # _problem(status, code) passing both on
        ("invalid_multipart", 400),  # _bad_form()
        ("invalid_upload_option", 422),  # a helper with a fixed code
        ("not_ready", 503),  # a problem body written by hand
    ]:
        assert expected in found
    assert {"worker_lost", "out_of_memory", "training_diverged", "internal"} <= {
        c for c, _ in job_failure_codes()
    }


def test_every_raised_code_is_registered_with_its_status() -> None:
    missing = [
        f"{where}: {code} ({status})"
        for code, status, where in raised_codes()
        if code not in ERROR_CODES or status not in ERROR_CODES[code].statuses
    ]
    assert not missing, (
        "register these in core/error_codes.py, then run `python -m core.error_codes`:\n" + "\n".join(missing)
    )


def test_every_job_failure_code_is_registered() -> None:
    missing = [f"{where}: {code}" for code, where in job_failure_codes() if code not in JOB_ERROR_CODES]
    assert not missing, "register these in core/error_codes.py (JOB):\n" + "\n".join(missing)


def test_every_registered_code_is_raised_somewhere() -> None:
    raised = {code: status for code, status, _ in raised_codes()} | DYNAMIC
    stale = sorted(set(ERROR_CODES) - set(raised))
    assert not stale, f"registered but never raised: {stale}"
    stale_jobs = sorted(set(JOB_ERROR_CODES) - {code for code, _ in job_failure_codes()})
    assert not stale_jobs, f"job codes registered but never used: {stale_jobs}"


def test_docs_errors_md_is_rendered_from_the_registry() -> None:
    assert DOC_PATH.read_text("utf-8") == render_markdown(), "run `python -m core.error_codes`"
    text = DOC_PATH.read_text("utf-8")
    for code in [*ERROR_CODES, *JOB_ERROR_CODES]:
        assert f"| `{code}` |" in text
