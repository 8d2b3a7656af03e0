"""The sandbox bounds what a template builds on the way to its output, and how long it runs."""

from __future__ import annotations

import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

from pao.spec import rendering, variables
from pao.spec.rendering import RenderError, render_string
from pao.spec.sandbox import MAX_CACHED_SOURCE, deadline

# Each builds a value of about 10 MB and writes out only its length: harmless if it were built,
# but far beyond what a template may build.
HOSTILE = {
    "repeat twice": "{{ ('a' * 60000 * 170) | length }}",
    "list repetition": "{{ (['a' * 60000] * 170) | join | length }}",
    "concatenation": "{% set a = 'a' * 60000 %}{% set b = a ~ a ~ a ~ a ~ a %}"
    "{% set c = b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b %}{{ c | length }}",
    "addition": "{% set a = 'a' * 60000 %}{{ (a + a + a + a + a) | length }}",
    "doubling in a loop": "{% set ns = namespace(a='a' * 1000) %}{% for i in range(14) %}"
    "{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a | length }}",
    "format width": "{{ '{:>10000000}'.format(1) | length }}",
    "nested format width": "{{ '{:>{}}'.format(1, 10000000) | length }}",
    "percent width": "{{ ('%10000000d' % 1) | length }}",
    "replace filter": "{{ ('x' * 170) | replace('x', 'y' * 60000) | length }}",
    "replace method": "{{ ('x' * 170).replace('x', 'y' * 60000) | length }}",
    "join filter": "{{ range(170) | join('y' * 60000) | length }}",
    "join method": "{{ ('y' * 60000).join(['a'] * 170) | length }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(10000) | length }}",
    "nested literals": "{% set a = 'a' * 60000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
    "{% set c = [b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b] %}{{ c | string | length }}",
    "nested output": "{% set a = ['a' * 60000] * 4 %}{% set b = [a] * 6 %}"
    "{% set c = [b] * 7 %}{{ c }}",
    "translate": "{{ ('a' * 170).translate({97: 'b' * 60000}) | length }}",
    "bytes": "{{ ('%10000000d'.encode() % 1) | length }}",
    "deep json": "{% set ns = namespace(a=[0] * 2000) %}{% for i in range(50) %}"
    "{% set ns.a = [ns.a] %}{% endfor %}{{ ns.a | json(indent=100) | length }}",
    "deep yaml": "{% set ns = namespace(a=[0] * 25000) %}{% for i in range(200) %}"
    "{% set ns.a = [ns.a] %}{% endfor %}{{ ns.a | yaml | length }}",
    "big numbers": "{% set a = 9 ** 60 %}{% set b = a * a * a * a * a * a * a * a %}"
    "{% set c = b * b * b * b %}{{ (c * c) | string | length }}",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_huge_intermediate_value_is_refused_before_it_is_built(template: str) -> None:
    tracemalloc.start()
    try:
        # A generous outer deadline: what must refuse these is the size guard, however slow
        # tracing and a busy machine make the walk that measures them.
        with deadline(30.0), pytest.raises(RenderError) as caught:
            render_string(template, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"{peak} bytes allocated"
    message = caught.value.message
    assert "refused by the sandbox" in message, message
    assert "characters" in message or "bits" in message, message


def test_values_within_the_limits_still_render() -> None:
    assert render_string("{{ ('ab' * 3) ~ ('%3d' % 7) ~ '{:>4}'.format('x') }}", {}) == (
        "ababab  7   x"
    )
    assert render_string("{{ ['a', 'b'] * 2 }}", {}) == ["a", "b", "a", "b"]
    assert render_string("{{ range(3) | join('-') }}", {}) == "0-1-2"
    assert render_string("{{ 'a-b' | replace('-', '_') }}", {}) == "a_b"


def test_a_render_in_a_worker_thread_stops_at_its_deadline() -> None:
    slow = (
        "{% for i in range(1000) %}{% for j in range(1000) %}{% set x = i * j %}"
        "{% endfor %}{% endfor %}done"
    )
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool, pytest.raises(RenderError) as caught:
        pool.submit(render_string, slow, {}).result()
    assert time.monotonic() - started < 1
    assert "rendering took longer than" in caught.value.message


def test_template_caches_hold_a_bounded_number_of_small_templates() -> None:
    for cached in (rendering._template, rendering._expression, variables.parse_template):
        assert cached.cache_info().maxsize <= 8_192
    rendering._template.cache_clear()
    big = "{{ 1 }}" + "x" * MAX_CACHED_SOURCE
    render_string(big, {})
    render_string("{{ 1 }} small", {})
    assert rendering._template.cache_info().currsize == 1


def test_a_render_that_waits_is_not_cut_short() -> None:
    # The deadline counts the processor time a render takes, not the time it waits (a busy
    # machine, a slow lookup): 400 ms asleep, on the main thread and in a worker, is allowed.
    def nap() -> str:
        time.sleep(0.4)
        return "rested"

    assert render_string("{{ nap() }}", {"nap": nap}) == "rested"
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(render_string, "{{ nap() }}", {"nap": nap}).result() == "rested"
