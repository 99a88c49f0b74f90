"""The JSON pre-parse checks (``nexmdm_api.jsonbody``, issue #11 item 1): right answers, linear cost.

They run before any credential is looked up, so anyone who reaches the API chooses their input. Each check
gets the worst 64 KiB bodies we could construct for it, and each must cost at most 5× parsing an ordinary
64 KiB body (``json.loads``) measured in the same run: a quadratic step is hundreds of times slower at
this size (the old string-skipping expression took ~11 s on ``WORST["depth-escaped-quotes"]``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from nexmdm_api.errors import ApiError
from nexmdm_api.jsonbody import MAX_DEPTH, NAMED_UP_TO, check_json_body

SIZE = 64 * 1024
LIMIT = 5.0


def fill(prefix: bytes, unit: bytes, suffix: bytes = b"") -> bytes:
    """``prefix + unit * n + suffix`` as close to 64 KiB as it gets without going over."""
    return prefix + unit * ((SIZE - len(prefix) - len(suffix)) // len(unit)) + suffix


def normal_body() -> bytes:
    """An ordinary 64 KiB JSON document: records with strings, numbers, booleans and a short list."""
    records, index = [], 0
    while len(json.dumps({"records": records})) < SIZE - 200:
        records.append(
            {"id": index, "device": f"store-{index:05d}", "model": "Pixel 8", "battery_pct": index % 100,
             "plugged": index % 2 == 0, "labels": ["ring-a", "store-42"], "note": "ok"}
        )  # fmt: skip
        index += 1
    return json.dumps({"records": records}).encode()


_KEYS = b",".join(b'"k%d":0' % i for i in range(9000))

#: the worst bodies per check: (body, expected problem code or None)
WORST: dict[str, tuple[bytes, str | None]] = {
    # nesting: strings are skipped (escapes, unterminated strings), brackets counted
    "depth-escaped-quotes": (b"[" * (MAX_DEPTH + 1) + b'\\"' * 32_000, "json_too_deep"),
    "depth-unterminated-string": (fill(b'"', b'\\"'), None),
    "depth-backslashes": (fill(b'["', b"\\\\", b'"]'), None),
    "depth-backslash-quote-runs": (fill(b'["', b'\\\\\\"'), None),
    "depth-quotes-only": (b'"' * SIZE, None),
    "depth-empty-strings": (fill(b"[", b'"",', b'""]'), None),
    "depth-brackets-in-strings": (fill(b"[", b'"[{",', b'""]'), None),
    "depth-unclosed": (b"[" * SIZE, "json_too_deep"),
    "depth-closed": (b"[" * (SIZE // 2) + b"]" * (SIZE // 2), "json_too_deep"),
    "depth-at-limit-many-times": (fill(b"[", b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b",", b"[]]"), None),
    "depth-comb": (fill(b"", b"[[]"), "json_too_deep"),
    "depth-shallow-brackets": (fill(b"[", b"[],", b"[]]"), None),
    # UTF-8
    "utf8-invalid-at-end": (fill(b'"', "€".encode(), b"\xff"), "invalid_utf8"),
    "utf8-surrogates": (fill(b'"', b"\xed\xa0\x80"), "invalid_utf8"),
    # repeated keys
    "dup-many-empty-objects": (fill(b"[", b"{},", b"{}]"), None),
    "dup-many-one-key-objects": (fill(b"[", b'{"a":0},', b'{"a":0}]'), None),
    "dup-repeat-after-many-objects": (fill(b"[", b"{},", b'{"a":0,"a":0}]'), "duplicate_json_key"),
    "dup-repeat-after-many-keys": (b"{" + _KEYS[: SIZE - 20].rpartition(b",")[0] + b',"k0":1}', "duplicate_json_key"),
    "dup-colons-in-strings": (fill(b'{"a":[', b'":",', b'""]}'), None),
    "dup-escaped-keys": (fill(b'{"', b"\\u0061", b'":1,"a":2}'), None),
    "dup-numbers": (fill(b"[", b"1,", b"1]"), None),
    "dup-long-number": (fill(b"[0.", b"9", b"]"), None),
}


def _best(check: Callable[[bytes], object], body: bytes, rounds: int = 9) -> float:
    """The fastest of ``rounds`` runs, with the cyclic garbage collector paused: in a big test process a
    collection that happens to fall in one run costs more than the run (the cost of the algorithm is what
    is compared, and the best of several runs sheds the noise of a loaded machine)."""
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            with contextlib.suppress(ApiError):
                check(body)
            times.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return min(times)


def _code(body: bytes) -> str | None:
    try:
        check_json_body(body)
    except ApiError as exc:
        return exc.code
    return None


@pytest.mark.parametrize("name", list(WORST))
def test_worst_bodies_get_their_answer(name: str) -> None:
    body, code = WORST[name]
    assert len(body) <= SIZE
    assert _code(body) == code


def _ratios() -> dict[str, float]:
    """Each worst body's check time over ``json.loads`` of the ordinary body, the baseline measured beside
    each case (the same load on both); a case gets up to three trials, since a burst of load on a shared
    machine can fall on one side: a quadratic step fails them all."""
    normal = normal_body()
    assert SIZE - 300 < len(normal) <= SIZE and _code(normal) is None
    ratios = {}
    for name, (body, _) in WORST.items():
        ratios[name] = math.inf
        for _ in range(3):
            ratios[name] = min(ratios[name], _best(check_json_body, body) / _best(json.loads, normal))
            if ratios[name] <= LIMIT:
                break
    return ratios


@pytest.mark.slow
def test_worst_bodies_cost_at_most_5x_parsing_an_ordinary_body() -> None:
    """Measured in a fresh interpreter: inside a long test run, a heap grown by a thousand tests made the
    allocation-heavy cases alone up to twice as slow, which is the test process, not the check."""
    code = "import json; from tests.api.test_jsonbody import _ratios; print(json.dumps(_ratios()))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    ratios = json.loads(done.stdout)
    assert set(ratios) == set(WORST)
    slow = {name: round(ratio, 1) for name, ratio in ratios.items() if ratio > LIMIT}
    assert not slow, f"checks slower than {LIMIT}x parsing an ordinary 64 KiB body: {slow}"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, None),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "json_too_deep"),
        (b"[" * MAX_DEPTH, None),  # truncated at the limit: the decoder words it
        (b"[" * (MAX_DEPTH + 1), "json_too_deep"),
        (b"[" * 20 + b"[]" * 30 + b"[" * (MAX_DEPTH - 20), None),
        (b"[" * 20 + b"[]" * 30 + b"[" * (MAX_DEPTH - 19), "json_too_deep"),
        (b'{"a": "' + b"[" * 100 + b'"}', None),
        (b'{"a\\\\": "\\"' + b"{" * 100 + b'"}', None),
        (b'{"a": "\\\\"' + b", " + b"[" * 40 + b"]" * 40 + b"}", "json_too_deep"),
        (b"[1]]" + b"[" * 100, None),  # a stray bracket stops any parser before the rest
    ],
)
def test_depth_is_exact_outside_strings(body: bytes, code: str | None) -> None:
    assert _code(body) == code


def test_a_repeated_key_is_named_in_a_small_body_and_refused_in_a_big_one() -> None:
    with pytest.raises(ApiError) as small:
        check_json_body(b'{"b": {"x": 1, "y": 2, "x": 3}, "a": 1, "a": 2}')
    assert small.value.code == "duplicate_json_key" and 'repeats the key "x"' in small.value.detail
    big = b"[" + b"{}," * NAMED_UP_TO + b'{"a": 0, "a": 1}]'
    with pytest.raises(ApiError) as large:
        check_json_body(big)
    assert large.value.code == "duplicate_json_key" and "repeats an object key" in large.value.detail
    assert _code(b'{"a": {"b": 1}, "b": {"a": 1}, "c": "x:y"}') is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (rb'{"a\\": 1, "a\\\\": 2, "\"": 3, "x": "\":\\\":", "y": ["\\", "\":"]}', None),
        (rb'{"a\\\\": 1, "a\\\\": 2}', "duplicate_json_key"),
        (rb'{"\":": 1, "\u0022:": 2}', "duplicate_json_key"),
        (rb'{"k": {"\\": 1}, "l": {"\\\\": 1, "\u005c": 2}}', None),  # `\\` and `\` differ
        (rb'{"k": {"\\": 1}, "l": {"\\": 1, "\u005c": 2}}', "duplicate_json_key"),
        (rb'{"k": "a:b", "v": ":", "w": {"x:": ":y"}}', None),
    ],
)
def test_repeated_keys_are_counted_right_through_escapes(body: bytes, code: str | None) -> None:
    assert _code(body) == code


# ------------------------------------------------------------------------------ every route with a body

#: a value of the right shape for each path parameter (a body check comes before any lookup)
PATH_VALUES = {"device_id": "dev_001", "request_id": "cmd-1", "campaign_id": "cmp_" + "0" * 26}
HOSTILE = {
    "repeated key": ("application/json", b'{"note":"a","note":"b"}', 400),
    "wrong type": ("text/plain", b"{}", 415),
    "30,000 levels": ("application/json", b"[" * 30_000 + b"]" * 30_000, 400),
}


def body_routes(app: Litestar) -> list[tuple[str, str, str]]:
    """(method, path, auth) of every handler that takes a body (a ``data`` parameter), read from the app."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.opt.get("body") == "form":
                continue  # the console's HTML forms: session and CSRF token, not JSON (tests/api/test_console.py)
            if "data" in handler.parsed_fn_signature.parameters:
                path = re.sub(r"\{(\w+):\w+\}", lambda m: PATH_VALUES.get(m.group(1), "x1"), route.path)
                for method in sorted(handler.http_methods):
                    found.append((method, path, handler.opt.get("auth", "")))
    return found


def test_every_route_with_a_body_refuses_repeated_keys_wrong_types_and_deep_nesting(
    client, admin: dict[str, str], enroll, make_token, auth
) -> None:
    """Issue #21: the campaign resume route took text/plain and repeated keys, and 30,000 levels were a 500."""
    credentials = {"admin": admin, "device": auth(enroll()), "enrollment": auth(make_token())}
    routes = body_routes(client.app)
    assert ("POST", "/v1/campaigns/" + PATH_VALUES["campaign_id"] + "/resume", "admin") in routes
    for method, path, auth in routes:
        for name, (media_type, body, status) in HOSTILE.items():
            headers = credentials[auth] | {"Content-Type": media_type}
            response = client.request(method, path, content=body, headers=headers)
            assert response.status_code == status, (method, path, name, response.text[:300])
            assert response.headers["content-type"].startswith("application/problem+json")
