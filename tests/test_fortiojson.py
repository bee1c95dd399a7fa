"""Go-compatible JSON output and fortio's ID rule (spec sections 1.1, 3.1)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from meshperf.fortiojson import dumps, gen_id, go_float, go_time


def test_go_layout_of_a_hand_written_result() -> None:
    # The layout Go's encoding/json MarshalIndent(v, "", "  ") gives, written out by hand:
    # nested objects, an empty list, null, booleans, integers and floats.
    raw = (
        '{\n  "RunType": "HTTP",\n  "Count": 3,\n  "Avg": 0.0005,\n  "Data": [\n    {\n'
        '      "Start": 0.0001,\n      "End": 0.001\n    }\n  ],\n  "Empty": [],\n'
        '  "Payload": null,\n  "Uniform": true\n}\n'
    )
    assert dumps(json.loads(raw)) == raw


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (413.0, "413"),
        (0.00005, "0.00005"),
        (5e-07, "5e-7"),
        (1e21, "1e+21"),
        (0.0009000000000000001, "0.0009000000000000001"),
        (-2.5, "-2.5"),
        (0.0, "0"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text
    assert float(text) == value


def test_go_escapes_html_characters() -> None:
    assert dumps({"URL": "http://h/?a=1&b=<2>"}, newline=False) == (
        '{\n  "URL": "http://h/?a=1\\u0026b=\\u003c2\\u003e"\n}'
    )


def test_gen_id_rules() -> None:
    t = dt.datetime(2022, 5, 8, 0, 12, 28)
    assert gen_id(t, "Sample with errors", 1) == "2022-05-08-001228_1_Sample_with_errors"
    assert (
        gen_id(t, "localhost:8080/echo , myhost") == "2022-05-08-001228_localhost_8080_echo_myhost"
    )
    assert gen_id(t) == "2022-05-08-001228"
    assert len(gen_id(t, "x" * 200)) == 96


def test_go_time_keeps_zone() -> None:
    utc = dt.datetime(2019, 7, 10, 17, 1, 28, 933303, tzinfo=dt.UTC)
    assert go_time(utc) == "2019-07-10T17:01:28.933303Z"
    zero = utc.replace(tzinfo=dt.timezone(dt.timedelta(0), "GMT"))
    assert go_time(zero) == "2019-07-10T17:01:28.933303Z"
    east = dt.datetime(2021, 5, 30, 18, 3, 29, 389507, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
    assert go_time(east) == "2021-05-30T18:03:29.389507-04:00"
    assert dt.datetime.fromisoformat(go_time(east)) == east
